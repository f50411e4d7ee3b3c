#!/usr/bin/env bash
# Every GitLab job's before_script: what the bootstrap itself needs (python3 with venv, git, npm), installed from
# Debian only when missing (a shell runner, or `invoke ci-local`, usually has them; debian:bookworm does not).
set -euo pipefail
missing=()
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
command -v git >/dev/null || missing+=(git)
command -v npm >/dev/null || missing+=(nodejs npm)
[ "${#missing[@]}" -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
