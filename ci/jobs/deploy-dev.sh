#!/usr/bin/env bash
# CI job "deploy-dev": the dev release onto the cluster DEV_KUBECONFIG holds (never a cluster of the runner's own),
# signed with dev's kept key (not one made on this runner: prod trusts dev's images by that key's public half).
#   DEV_KUBECONFIG               the dev cluster's kubeconfig (content or path)
#   VEZA_DEV_SIGNING_KEY         dev's cosign.key (`invoke keygen --env dev`): its content, or a file variable's path
#   VEZA_DEV_SIGNING_PASSPHRASE  its passphrase (dev's signing_passphrase_env in pipeline.toml)
source "$(dirname "$0")/../lib.sh"
ci_require deploy-dev DEV_KUBECONFIG VEZA_DEV_SIGNING_KEY VEZA_DEV_SIGNING_PASSPHRASE
ci_setup
ci_kubeconfig DEV_KUBECONFIG VEZA_DEV_KUBECONFIG
ci_signing_key dev VEZA_DEV_SIGNING_KEY
trap 'ci_summary dev; rm -rf "$VEZA_CI_TMP"' EXIT
"$INVOKE" release --env dev --yes
