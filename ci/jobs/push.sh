#!/usr/bin/env bash
# CI job "push": every tag of the dev images to dev's registry (credentials: VEZA_REGISTRY_USERNAME/PASSWORD).
source "$(dirname "$0")/../lib.sh"
ci_setup
"$INVOKE" push --env dev
