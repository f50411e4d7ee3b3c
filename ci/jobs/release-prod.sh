#!/usr/bin/env bash
# CI job "release-prod" (tags vX.Y.Z): the prod release, signed with the key the CI variables hold, onto the
# cluster PROD_KUBECONFIG holds. Without them it stops here, before anything is set up or built.
#   VEZA_PROD_SIGNING_KEY         prod's cosign.key (`invoke keygen --env prod`): its content, or a file variable's path
#   VEZA_PROD_SIGNING_PASSPHRASE  its passphrase (the variable pipeline.toml's signing_passphrase_env names)
#   PROD_KUBECONFIG               the prod cluster's kubeconfig (content or path)
#   VEZA_DEV_SIGNING_PUBLIC_KEY   dev's cosign.pub: prod's build reuses an image of dev's registry (reuse_from) only
#                                 when this key signed and attested it; else it builds
source "$(dirname "$0")/../lib.sh"
ci_require release-prod VEZA_PROD_SIGNING_KEY VEZA_PROD_SIGNING_PASSPHRASE PROD_KUBECONFIG VEZA_DEV_SIGNING_PUBLIC_KEY
ci_setup
ci_kubeconfig PROD_KUBECONFIG VEZA_PROD_KUBECONFIG
ci_signing_key prod VEZA_PROD_SIGNING_KEY
ci_public_key dev VEZA_DEV_SIGNING_PUBLIC_KEY
trap 'ci_summary prod; rm -rf "$VEZA_CI_TMP"' EXIT
"$INVOKE" release --env prod --dry-run
"$INVOKE" release --env prod --yes
