"""`invoke ci-local`: run this repository's `.gitlab-ci.yml` on this machine, job by job, as GitLab would.

Two pipelines, as GitLab starts them:
- `branch`: a push to the default branch (CI_COMMIT_BRANCH = CI_DEFAULT_BRANCH = the checked-out branch):
  lint → build → scan, smoke → push → deploy-dev.
- `tag`: a release tag vX.Y.Z at HEAD (CI_COMMIT_TAG; no CI_COMMIT_BRANCH): lint → build → scan, smoke →
  release-prod. Refused at once, before any job, when the signing key, its passphrase, the prod kubeconfig or
  dev's public key is not given (the same variables the job itself requires: ci/jobs/release-prod.sh); the branch
  pipeline likewise for deploy-dev's (ci/jobs/deploy-dev.sh).

dev's signing key is a kept one, as a team keeps it in its CI variables: unless our environment gives
VEZA_DEV_SIGNING_KEY (or VEZA_DEV_SIGNING_PUBLIC_KEY), ci-local hands the jobs dev's pair of this machine's key
directory (`[signing] key_dir/dev/`, made there on first use: dev is an auto_key environment) as
VEZA_DEV_SIGNING_KEY, VEZA_DEV_SIGNING_PASSPHRASE and VEZA_DEV_SIGNING_PUBLIC_KEY. So the branch pipeline's
deploy-dev signs with the same key whose public half the tag pipeline's release-prod trusts, and prod, on its own
runner, reuses dev's images from dev's registry instead of rebuilding them (registry_reuse.py, `reuse_from`).

What the jobs get is what a team sets in GitLab (README, "CI"), read here from our environment by name:
- the engine, as a docker:dind service gives it: DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH;
- every VEZA_* variable (the registry's address, CA and credentials, passphrases, …) except the ones that
  describe this checkout (LOCAL_ONLY), which each job sets for its own copy;
- DEV_KUBECONFIG, PROD_KUBECONFIG, VEZA_PROD_SIGNING_KEY, VEZA_DEV_SIGNING_KEY, VEZA_DEV_SIGNING_PUBLIC_KEY and
  every VEZA_*_CA_FILE (a registry's CA, which pipeline.toml names as registry_ca_file =
  "$VEZA_DEV_REGISTRY_CA_FILE") as GitLab "File" variables: our value is a path (its content is given) or the
  content itself; the job's variable holds the path of its own copy.
Names that hold a secret (SECRET_SUFFIXES, and the file variables) go to gitlab-ci-local's variables file, never
argv, and are redacted from every line. Nothing else of our environment reaches a job (tools/gitlab_ci_local).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import StageFailed, UsageError
from pipeline.core.paths import VENV_DIR
from pipeline.tools import gitlab_ci_local
from pipeline.tools.git import GitRepo
from pipeline.tools.gitlab_ci_local import Secret

PIPELINES = ("branch", "tag")
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
FILE_VARIABLES = ("DEV_KUBECONFIG", "PROD_KUBECONFIG", "VEZA_PROD_SIGNING_KEY", "VEZA_DEV_SIGNING_KEY",
                  "VEZA_DEV_SIGNING_PUBLIC_KEY")
FILE_SUFFIXES = ("_CA_FILE",)   # a registry's CA: a File variable too (not secret; given as one for its type)
# dev's kept key pair as CI variables: the key and its passphrase (deploy-dev), its public half (release-prod).
DEV_KEY, DEV_PASSPHRASE, DEV_PUBLIC_KEY = ("VEZA_DEV_SIGNING_KEY", "VEZA_DEV_SIGNING_PASSPHRASE",
                                           "VEZA_DEV_SIGNING_PUBLIC_KEY")
# What each pipeline's last job requires (the ci_require lines of ci/jobs/deploy-dev.sh and release-prod.sh).
BRANCH_REQUIRES = ("DEV_KUBECONFIG", DEV_KEY, DEV_PASSPHRASE)
TAG_REQUIRES = ("VEZA_PROD_SIGNING_KEY", "VEZA_PROD_SIGNING_PASSPHRASE", "PROD_KUBECONFIG", DEV_PUBLIC_KEY)
REQUIRES = {"branch": ("deploy-dev", BRANCH_REQUIRES), "tag": ("release-prod", TAG_REQUIRES)}
WHAT = {"DEV_KUBECONFIG": "the dev cluster's kubeconfig", "PROD_KUBECONFIG": "the prod cluster's kubeconfig",
        "VEZA_PROD_SIGNING_KEY": "prod's cosign.key, its path or content",
        "VEZA_PROD_SIGNING_PASSPHRASE": "its passphrase", DEV_KEY: "dev's cosign.key, its path or content",
        DEV_PASSPHRASE: "its passphrase", DEV_PUBLIC_KEY: "dev's cosign.pub, its path or content"}
SECRET_SUFFIXES = ("PASSWORD", "PASSPHRASE", "TOKEN", "SECRET", "KEY", "KUBECONFIG")
# Variables of this checkout, not of the pipeline: a job's copy sets its own (paths.py reads them; a job that signs
# writes its key to a private VEZA_KEY_DIR of its own, ci/lib.sh, as on a fresh runner).
LOCAL_ONLY = ("VEZA_ROOT", "VEZA_CONFIG", "VEZA_STATE_DIR", "VEZA_TOOLS_DIR", "VEZA_KEY_DIR")
RELEASE_TAG = re.compile(r"^v\d+\.\d+\.\d+$")   # the template's release-prod rule
TIMEOUT_S = 3 * 3600.0


@dataclass
class CiRun:
    """What one pipeline run was given (names only for secrets) and how it ended."""
    pipeline: str
    ref: str
    variables: dict[str, str] = field(default_factory=dict)
    secret_names: list[str] = field(default_factory=list)
    exit_code: int = 0
    seconds: float = 0.0


def pipeline_variables(pipeline: str, repo: GitRepo) -> tuple[dict[str, str], list[str], str]:
    """GitLab's predefined variables of this pipeline kind for the repository's HEAD: (variables, names to unset,
    the ref). UsageError (exit 2, one line) for an unknown kind, a detached HEAD (branch) or no vX.Y.Z tag at HEAD."""
    if pipeline not in PIPELINES:
        raise UsageError(f"--pipeline {pipeline!r} is not one of {', '.join(PIPELINES)}",
                         "use --pipeline branch (the default branch's pipeline) or --pipeline tag")
    if pipeline == "branch":
        branch = repo.branch()
        if not branch:
            raise UsageError(f"HEAD of {repo.root} is detached: a branch pipeline needs a branch",
                             "git switch <branch>, or run --pipeline tag on a release tag")
        return ({"CI_COMMIT_BRANCH": branch, "CI_DEFAULT_BRANCH": branch, "CI_COMMIT_REF_NAME": branch},
                ["CI_COMMIT_TAG"], branch)
    head = repo.head_sha()
    tags = sorted(t.name for t in repo.tags() if t.sha == head and RELEASE_TAG.match(t.name))
    if not tags:
        raise UsageError(f"no release tag vX.Y.Z points at HEAD ({head[:12]}) of {repo.root}",
                         "tag it first (invoke bump, or git tag -a vX.Y.Z), then rerun --pipeline tag")
    tag = tags[-1]
    return {"CI_COMMIT_TAG": tag, "CI_COMMIT_REF_NAME": tag}, ["CI_COMMIT_BRANCH"], tag


def shell_runner_file(repo: Path) -> Path:
    """The repository's .gitlab-ci.yml as a shell runner runs it: the same jobs, without `default.image` (this
    machine pulls no job image; gitlab-ci-local's shell executor takes only jobs without one). Written under
    `.gitlab-ci-local/` (the tool's own state directory, never a job's copy); returns its path relative to repo.
    UsageError when the template is missing or a job names its own image."""
    import yaml

    src = repo / ".gitlab-ci.yml"
    try:
        doc = yaml.safe_load(src.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {src}: {exc}", "run ci-local in the project's clone") from None
    own = sorted(k for k, v in doc.items() if isinstance(v, dict) and "image" in v and k != "default")
    if own:
        raise UsageError(f"{src}: job(s) {', '.join(own)} name their own image; a shell runner cannot run them",
                         "give the image in `default:` only (ci-local drops it)")
    doc.get("default", {}).pop("image", None)
    rel = Path(".gitlab-ci-local") / "shell-runner.gitlab-ci.yml"
    (repo / rel).parent.mkdir(exist_ok=True)
    (repo / rel).write_text(yaml.safe_dump(doc, sort_keys=False))
    return rel


def is_file_variable(name: str) -> bool:
    """GitLab "File" type: the job gets a path to its own copy of the content (FILE_VARIABLES, FILE_SUFFIXES)."""
    return name in FILE_VARIABLES or (name.startswith("VEZA_") and name.endswith(FILE_SUFFIXES))


def is_secret(name: str) -> bool:
    return is_file_variable(name) or name.endswith(SECRET_SUFFIXES)


def _file_content(value: str) -> str:
    """A file variable's content: the file's, when our value names an existing file; else the value itself."""
    path = Path(value).expanduser()
    if len(value) < 4096 and "\n" not in value and path.is_file():
        return path.read_text()
    return value


def ci_variables(environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Secret]]:
    """The CI/CD variables our environment gives the jobs: (plain variables, secrets). See the module docstring."""
    plain: dict[str, str] = {}
    secrets: dict[str, Secret] = {}
    for name, value in environ.items():
        if not value or name in LOCAL_ONLY:
            continue
        if name not in ENGINE_VARIABLES and not is_file_variable(name) and not name.startswith("VEZA_"):
            continue
        if name in ENGINE_VARIABLES and not environ.get("DOCKER_HOST"):
            continue   # TLS settings without the engine they are for would only break the default socket
        if is_file_variable(name):
            secrets[name] = Secret(_file_content(value), file=True)
        elif is_secret(name):
            secrets[name] = Secret(value)
        else:
            plain[name] = value
    return plain, secrets


def missing_for(pipeline: str, plain: Mapping[str, str], secrets: Mapping[str, Secret],
                made: tuple[str, ...] = ()) -> list[str]:
    """The variables a pipeline kind requires (REQUIRES) that are neither given nor `made` by ci-local, in their
    order."""
    return [n for n in REQUIRES[pipeline][1] if n not in secrets and n not in plain and n not in made]


# dev's kept pair: (cosign.key PEM, its passphrase, cosign.pub PEM, where it is kept), from the trust layer
# (pipeline/trust/envkeys.kept_pair; this layer may not import it: the task hands it in).
KeptKey = Callable[[], tuple[str, str, str, str]]


def makes_dev_key(plain: Mapping[str, str], secrets: Mapping[str, Secret], kept: KeptKey | None) -> bool:
    """Whether ci-local hands the jobs dev's kept pair: our environment gives neither dev's key nor its public
    half (given ones win: they are what the team's CI holds), and there is a kept pair to read."""
    return kept is not None and not any(n in plain or n in secrets for n in (DEV_KEY, DEV_PUBLIC_KEY))


def dev_key_secrets(kept: KeptKey) -> tuple[dict[str, Secret], str]:
    """The three dev key variables of the kept pair (the key and public half as File variables), and where the
    pair is kept (for the run's line). UsageError (exit 2) from `kept` when dev has no key it can read."""
    private_pem, passphrase, public_pem, where = kept()
    return ({DEV_KEY: Secret(private_pem, file=True), DEV_PASSPHRASE: Secret(passphrase),
             DEV_PUBLIC_KEY: Secret(public_pem, file=True)}, where)


def run_ci_local(pipeline: str = "branch", *, repo_dir: Path | None = None, environ: Mapping[str, str] | None = None,
                 say: Callable[[str], None] = print, timeout: float = TIMEOUT_S,
                 kept_dev_key: KeptKey | None = None) -> CiRun:
    """Run the repository's .gitlab-ci.yml pipeline of this kind with the pinned gitlab-ci-local; every line of
    its output to `say`. `kept_dev_key`: dev's kept pair, handed to the jobs when our environment gives no dev key
    (makes_dev_key). Returns the CiRun; StageFailed (exit 1) naming the log when a job failed, UsageError (exit 2)
    before any job for a bad kind/ref, a pipeline without the variables its last job requires (REQUIRES) or a kept
    dev key that cannot be read, ToolMissing (exit 6) when gitlab-ci-local is not installed."""
    environ = os.environ if environ is None else environ
    repo = GitRepo(repo_dir or Path.cwd())
    predefined, unset, ref = pipeline_variables(pipeline, repo)
    plain, secrets = ci_variables(environ)
    makes = makes_dev_key(plain, secrets, kept_dev_key)
    missing = missing_for(pipeline, plain, secrets, (DEV_KEY, DEV_PASSPHRASE, DEV_PUBLIC_KEY) if makes else ())
    if missing:
        job = REQUIRES[pipeline][0]
        raise UsageError(f"the {pipeline} pipeline's {job} job needs the CI variable(s) {', '.join(missing)}; "
                         "none is set",
                         f"set them ({'; '.join(f'{n}: {WHAT[n]}' for n in missing)}) as in the README, \"CI\"")
    gitlab_ci_local.executable()
    if makes and kept_dev_key is not None:
        made, where = dev_key_secrets(kept_dev_key)
        secrets.update(made)
        say(f"ci-local: dev's signing key: the pair kept in {where} (VEZA_DEV_SIGNING_KEY, "
            "VEZA_DEV_SIGNING_PASSPHRASE, VEZA_DEV_SIGNING_PUBLIC_KEY)")
    uv = VENV_DIR / "bin" / "uv"
    if uv.exists() and "VEZA_UV" not in plain:
        plain["VEZA_UV"] = str(uv)   # each job's bootstrap installs its venv with uv: seconds, not minutes
    variables = {**plain, **predefined}
    run = CiRun(pipeline, ref, variables, sorted(secrets))
    say(f"ci-local: the {pipeline} pipeline of {repo.root} at {ref} ({repo.head_sha()[:12]}); variables: "
        f"{', '.join(sorted(variables)) or 'none'}; secrets (values not shown): "
        f"{', '.join(run.secret_names) or 'none'}")
    t0 = time.monotonic()
    run.exit_code = gitlab_ci_local.run_pipeline(repo.root, shell_runner_file(repo.root), variables=variables,
                                                 secrets=secrets, unset=unset, on_line=say, timeout=timeout)
    run.seconds = time.monotonic() - t0
    if run.exit_code != 0:
        raise StageFailed(f"ci-local: the {pipeline} pipeline failed (gitlab-ci-local exit {run.exit_code}) after "
                          f"{run.seconds:.0f}s; the failing job's lines are above",
                          f"job logs: {repo.root / '.gitlab-ci-local' / 'output'}")
    say(f"ci-local: the {pipeline} pipeline passed in {run.seconds:.0f}s")
    return run

