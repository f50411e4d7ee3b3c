#!/usr/bin/env bash
# CI job "scan": the Trivy gate; SARIF and the summary land in <state dir>/dev/reports/.
source "$(dirname "$0")/../lib.sh"
ci_setup
"$INVOKE" scan --env dev
