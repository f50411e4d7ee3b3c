"""An environment's signing key pair and trusted keys, from the config objects (no config loading here).

Keys live in `[signing].key_dir/<env>/` (VEZA_KEY_DIR overrides; never inside the repository); the
passphrase comes from the environment variable the environment (`signing_passphrase_env`) or `[signing]`
(`passphrase_env`) names, and is registered for redaction as soon as it is read.

An embedded environment with `auto_key = true` (local, dev: never one that requires a release tag or a
confirmation) gets its pair made on first use, so a fresh machine's first release signs with no setup;
when its passphrase variable is unset, a random passphrase is kept beside the key (`passphrase`, 0600,
outside the repository): such a key proves only that this machine's pipeline signed.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.core.config import Config, Environment
from pipeline.core.errors import UsageError
from pipeline.core.redact import register_secret
from pipeline.trust.keys import (
    PRIVATE_NAME,
    KeyPaths,
    decrypt_private_key,
    generate_key_pair,
    load_public_key,
    public_pem,
)


def key_paths(cfg: Config, env: Environment) -> KeyPaths:
    return KeyPaths(cfg.signing.key_dir / env.name)


def passphrase_var(cfg: Config, env: Environment) -> str:
    return env.signing_passphrase_env or cfg.signing.passphrase_env


def _auto_passphrase(cfg: Config, env: Environment) -> str:
    path = key_paths(cfg, env).directory / "passphrase"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def passphrase(cfg: Config, env: Environment) -> str:
    """The passphrase of env's key; UsageError (exit 2) naming the variable when it is unset or empty
    (an auto_key environment falls back to its kept random passphrase)."""
    var = passphrase_var(cfg, env)
    value = os.environ.get(var, "")
    if not value and env.auto_key:
        value = _auto_passphrase(cfg, env)
    if not value:
        raise UsageError(f"{var} is not set: the passphrase of {env.name}'s signing key",
                         f"export {var}=… (the CI's secret store in CI); pipeline.toml names the variable")
    register_secret(value)
    return value


def signing_key(cfg: Config, env: Environment) -> ec.EllipticCurvePrivateKey:
    """env's private key, decrypted; UsageError when absent (naming VEZA_KEY_DIR and the passphrase variable),
    undecryptable or the passphrase is missing. An auto_key environment without a key gets one made here; a
    key without its public half (cosign.pub) gets it written beside it, so verify-images trusts it."""
    paths = key_paths(cfg, env)
    if env.auto_key and not paths.private.is_file():
        keygen(cfg, env)
    if not paths.private.is_file():
        raise UsageError(f"no signing key for {env.name} at {paths.private}",
                         f"set VEZA_KEY_DIR to a directory holding {env.name}/{PRIVATE_NAME} and "
                         f"{passphrase_var(cfg, env)} to its passphrase (CI: ci/jobs/release-prod.sh does), "
                         f"or make a pair: invoke keygen --env {env.name}")
    key = decrypt_private_key(paths.private.read_bytes(), passphrase(cfg, env).encode(), where=str(paths.private))
    if not paths.public.is_file():   # a key given alone (a CI variable holds cosign.key): trusted_keys needs its half
        paths.public.write_bytes(public_pem(key))
    return key


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


@dataclass(frozen=True)
class KeptPair:
    """An environment's kept key pair as CI variables hold it: the encrypted cosign.key (PEM text), its
    passphrase and cosign.pub (PEM text). The passphrase is registered for redaction when read."""

    private_pem: str = field(repr=False)
    passphrase: str = field(repr=False)
    public_pem: str


def kept_pair(cfg: Config, env: Environment) -> KeptPair:
    """env's key pair of key_dir/<env>/, decrypted once to check the passphrase opens it (signing_key: an auto_key
    environment gets its pair made here on first use, and kept for the next call); UsageError (exit 2) as
    signing_key when there is none, or the passphrase is missing or wrong."""
    signing_key(cfg, env)
    paths = key_paths(cfg, env)
    return KeptPair(paths.private.read_text(), passphrase(cfg, env), paths.public.read_text())


def keygen(cfg: Config, env: Environment, *, force: bool = False) -> KeyPaths:
    """`invoke keygen --env ENV`: a new encrypted pair under key_dir/<env>/ with the env's passphrase."""
    return generate_key_pair(key_paths(cfg, env), passphrase(cfg, env), force=force)
