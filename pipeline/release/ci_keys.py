"""The keys `invoke ci-local` hands the template's jobs as CI variables (pipeline/machine/ci_local.py, which sits
beside the trust layer and may not import it): dev's kept pair of this machine's key directory."""

from __future__ import annotations

from pipeline.core.config import load_config
from pipeline.trust import envkeys


def kept_dev_key() -> tuple[str, str, str, str]:
    """dev's pair of `[signing] key_dir/dev/` (VEZA_KEY_DIR overrides), made there on first use when dev is an
    auto_key environment: (cosign.key PEM, its passphrase, cosign.pub PEM, the directory). The config is the
    one every task reads (VEZA_CONFIG, else the checkout's pipeline.toml). UsageError (exit 2, naming
    VEZA_KEY_DIR and dev's passphrase variable) when there is no pair, or its passphrase does not open it."""
    cfg = load_config()
    env = cfg.env("dev")
    pair = envkeys.kept_pair(cfg, env)
    return pair.private_pem, pair.passphrase, pair.public_pem, str(envkeys.key_paths(cfg, env).directory)
