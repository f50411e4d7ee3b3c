"""An environment's signing key pair and trusted keys, from the config objects (no config loading here).

Keys live in `[signing].key_dir/<env>/` (VEZA_KEY_DIR overrides; never inside the repository); the
passphrase comes from the environment variable the environment (`signing_passphrase_env`) or `[signing]`
(`passphrase_env`) names, and is registered for redaction as soon as it is read.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.core.config import Config, Environment
from pipeline.core.errors import UsageError
from pipeline.core.redact import register_secret
from pipeline.trust.keys import KeyPaths, decrypt_private_key, generate_key_pair, load_public_key


def key_paths(cfg: Config, env: Environment) -> KeyPaths:
    return KeyPaths(cfg.signing.key_dir / env.name)


def passphrase_var(cfg: Config, env: Environment) -> str:
    return env.signing_passphrase_env or cfg.signing.passphrase_env


def passphrase(cfg: Config, env: Environment) -> str:
    """The passphrase of env's key; UsageError (exit 2) naming the variable when it is unset or empty."""
    var = passphrase_var(cfg, env)
    value = os.environ.get(var, "")
    if not value:
        raise UsageError(f"{var} is not set: the passphrase of {env.name}'s signing key",
                         f"export {var}=… (the CI's secret store in CI); pipeline.toml names the variable")
    register_secret(value)
    return value


def signing_key(cfg: Config, env: Environment) -> ec.EllipticCurvePrivateKey:
    """env's private key, decrypted; UsageError when absent, undecryptable or the passphrase is missing."""
    paths = key_paths(cfg, env)
    if not paths.private.is_file():
        raise UsageError(f"no signing key for {env.name} at {paths.private}",
                         f"make one: invoke keygen --env {env.name}")
    return decrypt_private_key(paths.private.read_bytes(), passphrase(cfg, env).encode(), where=str(paths.private))


def trusted_keys(cfg: Config, env: Environment) -> list[ec.EllipticCurvePublicKey]:
    """env's own public key (when present) plus `trusted_keys`; UsageError when there is none at all."""
    out = []
    own = key_paths(cfg, env).public
    if own.is_file():
        out.append(load_public_key(own))
    out += [load_public_key(p) for p in env.trusted_keys]
    if not out:
        raise UsageError(f"{env.name} trusts no signing key (no {own}, no trusted_keys)",
                         f"make one: invoke keygen --env {env.name}, or list trusted_keys in pipeline.toml")
    return out


def keygen(cfg: Config, env: Environment, *, force: bool = False) -> KeyPaths:
    """`invoke keygen --env ENV`: a new encrypted pair under key_dir/<env>/ with the env's passphrase."""
    return generate_key_pair(key_paths(cfg, env), passphrase(cfg, env), force=force)
