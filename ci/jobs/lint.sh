#!/usr/bin/env bash
# CI job "lint": the repository's linters (Dockerfiles, compose, k8s, Helm, workflows) and the unit tests.
source "$(dirname "$0")/../lib.sh"
ci_setup
"$INVOKE" lint
"$INVOKE" test --unit
