"""The registry client pool: one client per address, one timeout policy, credentials from [registry]."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from pipeline.core.config import Config, load_config
from pipeline.tools.registry_clients import REQUEST_CEILING_S, RegistryClients, request_timeout_s

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cfg() -> Config:
    return load_config(ROOT / "pipeline.toml", check_files=False)


def test_one_client_per_address_shared_across_threads(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", "/nonexistent")
    pool = RegistryClients(cfg)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(pool.client("127.0.0.1:5999"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in got}) == 1
    assert pool.client("127.0.0.1:5998") is not got[0]


def test_every_client_has_the_one_timeout(cfg: Config) -> None:
    short = dataclasses.replace(cfg, registry=dataclasses.replace(cfg.registry, timeout_s=7))
    assert RegistryClients(short).client("127.0.0.1:5999").timeout == 7.0
    assert request_timeout_s(cfg) == min(REQUEST_CEILING_S, cfg.registry.timeout_s)
    assert RegistryClients(cfg).client("127.0.0.1:5999").timeout == request_timeout_s(cfg)


def test_credentials_come_from_the_registry_variables(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    named = dataclasses.replace(cfg, registry=dataclasses.replace(cfg.registry, username_env="T_REG_USER",
                                                                   password_env="T_REG_PASS"))
    monkeypatch.setenv("T_REG_USER", "ci")
    monkeypatch.setenv("T_REG_PASS", "s3cret-pool")
    creds = RegistryClients(named).credentials("127.0.0.1:5999")
    assert creds is not None and creds.username == "ci"
