#!/usr/bin/env bash
# CI job "smoke": the compose stack of the manifest's images, always torn down.
source "$(dirname "$0")/../lib.sh"
ci_setup
"$INVOKE" smoke --env dev
