"""The registry clients of one command: one RegistryClient per registry address, one credential lookup and one
timeout policy for all of them (push, sign, verify-images, SBOM attachment, promotion, resume checks).

Which CA and which credentials a registry gets is the environment's (core/config.RegistryAccess): the
environment's `registry_ca_file`, `registry_username_env`/`registry_password_env` (defaults: [registry]
ca_file/username_env/password_env), else the docker config (tools/credentials.py), looked up once per address.
The embedded registry is one case of this: no CA file (loopback, plain http), no variables set (anonymous).
Every request of every client waits at most `request_timeout_s(cfg)`; retries are the caller's
(`retry_policy(cfg)` with core/retry.with_retries).
"""

from __future__ import annotations

import os
import threading

from pipeline.core.config import Config, Environment, RegistryAccess
from pipeline.core.retry import RetryPolicy
from pipeline.tools import credentials as creds_mod
from pipeline.tools.registry_api import Credentials, RegistryClient

# One request to a registry: long enough for an SBOM or attestation blob upload on a slow link, short enough
# that a registry that accepts the connection and never answers fails the check within a minute.
REQUEST_CEILING_S = 60.0


def request_timeout_s(cfg: Config) -> float:
    """Seconds one registry request may take: [registry] timeout_s, at most REQUEST_CEILING_S."""
    return min(REQUEST_CEILING_S, float(cfg.registry.timeout_s))


def retry_policy(cfg: Config) -> RetryPolicy:
    """The retries of registry calls: [registry] retry_attempts and retry_ceiling_s (seconds)."""
    return RetryPolicy(attempts=cfg.registry.retry_attempts, ceiling_s=cfg.registry.retry_ceiling_s,
                       base_s=min(0.5, cfg.registry.retry_ceiling_s or 0.5))


def registry_access(cfg: Config, address: str, envs: tuple[Environment, ...] = ()) -> RegistryAccess:
    """How `address` is reached: the first of `envs` whose registry it is, else the first configured environment
    whose registry it is, else the [registry] defaults (environment ""; the [registry] CA file only when
    `address` is [registry] address)."""
    for env in (*envs, *cfg.environments.values()):
        if env.registry == address:
            return env.registry_access
    r = cfg.registry
    return RegistryAccess("", address, r.ca_file if address == r.address else None, r.username_env, r.password_env)


def access_credentials(access: RegistryAccess) -> Credentials | None:
    """The push credentials of `access`: its two variables, else the docker config; None: anonymous.
    Registered for redaction. UsageError (exit 2) naming the environment, the registry and the unset variable
    when only one of the two is set."""
    return creds_mod.resolve(access.address, access.username_env, access.password_env, where=access.where())


def registry_credentials(cfg: Config, address: str) -> Credentials | None:
    """[registry] username_env/password_env, else the docker config (see access_credentials)."""
    return access_credentials(registry_access(cfg, address))


def auth_fix(access: RegistryAccess) -> str:
    """The hint of a refused credential: which variables to set, saying which are unset (or `docker login`)."""
    if access.variables():
        unset = [v for v in (access.username_env, access.password_env) if v and not os.environ.get(v)]
        state = f" ({' and '.join(unset)} not set)" if unset else ""
        return (f"set {access.variables()} to a user the registry accepts{state}, "
                f"or `docker login {access.address}`")
    return f"`docker login {access.address}`, or name the variables in registry_username_env/registry_password_env"


class RegistryClients:
    """One RegistryClient per address, built on first use (thread-safe: parallel pushes share the pool).

    `envs`: the environments of the command (the target first); an address is reached as the first of them
    whose registry it is says (registry_access)."""

    def __init__(self, cfg: Config, *envs: Environment) -> None:
        self.cfg = cfg
        self.envs = envs
        self.timeout_s = request_timeout_s(cfg)
        self.policy = retry_policy(cfg)
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def access(self, address: str) -> RegistryAccess:
        """How `address` is reached in this command (registry_access)."""
        return registry_access(self.cfg, address, self.envs)

    def client(self, address: str) -> RegistryClient:
        """The client of `address` (host[:port]), with its credentials and CA. UsageError for half-set
        credentials; RegistryTrustError at the first request when the CA file is unusable."""
        with self._lock:
            if address not in self._clients:
                access = self.access(address)
                self._clients[address] = RegistryClient(
                    address, credentials=access_credentials(access), cafile=access.ca_file,
                    timeout=self.timeout_s, where=access.where(), auth_fix=auth_fix(access))
            return self._clients[address]

    def credentials(self, address: str) -> Credentials | None:
        """The credentials the client of `address` uses (for the engine or skopeo, which take them apart)."""
        return self.client(address).credentials
