#!/usr/bin/env bash
# CI job "build": version facts, then the dev images (the plan says why each one is rebuilt).
source "$(dirname "$0")/../lib.sh"
ci_setup
"$INVOKE" version --env dev --json
"$INVOKE" build --env dev
