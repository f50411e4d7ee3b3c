#!/usr/bin/env bash
# CI job "deploy-dev": the dev release onto the cluster DEV_KUBECONFIG holds (never a cluster of the runner's own).
source "$(dirname "$0")/../lib.sh"
ci_require deploy-dev DEV_KUBECONFIG
ci_setup
ci_kubeconfig DEV_KUBECONFIG VEZA_DEV_KUBECONFIG
trap 'ci_summary dev; rm -rf "$VEZA_CI_TMP"' EXIT
"$INVOKE" release --env dev --yes
