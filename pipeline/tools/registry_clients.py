"""The registry clients of one command: one RegistryClient per registry address, one credential lookup and one
timeout policy for all of them (push, sign, verify-images, SBOM attachment, promotion, resume checks).

Credentials are `[registry] username_env/password_env`, else the docker config (tools/credentials.py), looked up
once per address. Every request of every client waits at most `request_timeout_s(cfg)`; retries are the
caller's (`retry_policy(cfg)` with core/retry.with_retries).
"""

from __future__ import annotations

import threading

from pipeline.core.config import Config
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


def registry_credentials(cfg: Config, address: str) -> Credentials | None:
    """[registry] username_env/password_env, else the docker config; registered for redaction. UsageError when
    only one of the two variables is set."""
    return creds_mod.resolve(address, cfg.registry.username_env, cfg.registry.password_env)


class RegistryClients:
    """One RegistryClient per address, built on first use (thread-safe: parallel pushes share the pool)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.timeout_s = request_timeout_s(cfg)
        self.policy = retry_policy(cfg)
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def client(self, address: str) -> RegistryClient:
        """The client of `address` (host[:port]), with its credentials. UsageError for half-set credentials."""
        with self._lock:
            if address not in self._clients:
                self._clients[address] = RegistryClient(address, credentials=registry_credentials(self.cfg, address),
                                                        timeout=self.timeout_s)
            return self._clients[address]

    def credentials(self, address: str) -> Credentials | None:
        """The credentials the client of `address` uses (for the engine or skopeo, which take them apart)."""
        return self.client(address).credentials
