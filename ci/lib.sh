# Sourced by every ci/jobs/<job>.sh: the steps GitHub's and GitLab's templates share, so they cannot drift.
# Paths are the pipeline's own: <state dir>/<env>/{manifest.json,reports/,runs/<run id>/} (state dir: .pipeline,
# or VEZA_STATE_DIR). Nothing here knows which CI runs it beyond where a step summary goes.
set -euo pipefail

VEZA_CI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$VEZA_CI_ROOT"
INVOKE="$VEZA_CI_ROOT/.venv/bin/invoke"
STATE_DIR="${VEZA_STATE_DIR:-.pipeline}"

# A private directory for this job's kubeconfig and key, removed however the job ends.
VEZA_CI_TMP="$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/veza-ci.XXXXXX")"
trap 'rm -rf "$VEZA_CI_TMP"' EXIT

ci_fail() {  # one line, exit 2: a missing CI variable is a configuration error, as in the pipeline
    echo "error: $*" >&2
    exit 2
}

ci_require() {  # ci_require JOB VAR... : stop at once, naming every unset variable
    local job="$1" missing=() var
    shift
    for var in "$@"; do
        [ -n "${!var:-}" ] || missing+=("$var")
    done
    [ "${#missing[@]}" -eq 0 ] || ci_fail "$job: set the CI variable(s) ${missing[*]} (masked; see README, \"CI\")"
}

ci_setup() {  # the machine: only what is missing (the bootstrap checks), as root
    if [ "$(id -u)" -eq 0 ]; then
        python3 -m pipeline.machine.bootstrap
    else
        sudo -E python3 -m pipeline.machine.bootstrap
    fi
}

ci_is_pem() {  # ci_is_pem VALUE: PEM content (a path never starts with a PEM header), leading whitespace allowed
    [[ "$1" =~ ^[[:space:]]*-----BEGIN ]]
}

ci_secret_file() {  # ci_secret_file VAR DEST: a variable holding a file's content, or a path (GitLab "File" type)
    local value="${!1}"
    (umask 077 && mkdir -p "$(dirname "$2")" && if [ -f "$value" ]; then cp "$value" "$2"
    elif ci_is_pem "$value"; then
        # PEM content pasted into a secret may start with blank lines and hold indentation or CRLF line ends,
        # which PEM readers (OpenSSL's, cryptography's) refuse: each line trimmed, nothing before the first header
        # (a blank line after it may separate RFC 1421 headers from the base64: kept)
        printf '%s\n' "$value" | tr -d '\r' | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e '/-----BEGIN/,$!d' > "$2"
    else printf '%s\n' "$value" > "$2"; fi)
}

ci_ca_files() {  # every *_CA_FILE variable holding a PEM's content (a GitHub secret) becomes a path, as GitLab's File type gives
    local var
    for var in $(compgen -e | grep '_CA_FILE$' || true); do
        if ci_is_pem "${!var}"; then
            ci_secret_file "$var" "$VEZA_CI_TMP/ca/$var.pem"
            export "$var=$VEZA_CI_TMP/ca/$var.pem"
        fi
    done
}
ci_ca_files

ci_kubeconfig() {  # ci_kubeconfig VAR ENV_VAR: the cluster's kubeconfig from VAR; pipeline.toml's kubeconfig_env names ENV_VAR
    ci_secret_file "$1" "$VEZA_CI_TMP/kubeconfig"
    export "$2=$VEZA_CI_TMP/kubeconfig"
}

ci_signing_key() {  # ci_signing_key ENV VAR: ENV's cosign.key from VAR, where the pipeline reads it (VEZA_KEY_DIR/ENV/)
    ci_secret_file "$2" "$VEZA_CI_TMP/keys/$1/cosign.key"
    export VEZA_KEY_DIR="$VEZA_CI_TMP/keys"
}

ci_public_key() {  # ci_public_key ENV VAR: ENV's cosign.pub from VAR, where trusted_keys reads it (VEZA_KEY_DIR/ENV/)
    ci_secret_file "$2" "$VEZA_CI_TMP/keys/$1/cosign.pub"
    export VEZA_KEY_DIR="$VEZA_CI_TMP/keys"
}

ci_summary() {  # ci_summary ENV: the newest run report of ENV on stdout, and in GitHub's step summary when there is one
    local report
    report="$(ls -1 "$STATE_DIR/$1"/runs/*/report.md 2>/dev/null | sort | tail -n 1)"
    [ -n "$report" ] || { echo "no run report under $STATE_DIR/$1/runs/"; return 0; }
    cat "$report"
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat "$report" >> "$GITHUB_STEP_SUMMARY"; fi
}
