"""The compose files' rules, read from the files themselves (no engine): no secret, no fixed port in smoke,
healthchecks everywhere, healthy-dependency ordering, labels on every object, images as variables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.config import load_config
from pipeline.local.stack_spec import BASE_NAME, DEV_NAME, SMOKE_NAME, compose_service, image_var

COMPOSE = Path(__file__).resolve().parents[2] / "compose"   # this checkout's stack
BASE_FILE, DEV_FILE, SMOKE_FILE = (COMPOSE / n for n in (BASE_NAME, DEV_NAME, SMOKE_NAME))

VAR = re.compile(r"^\$\{[A-Z_]+(:[?-][^}]*)?\}$")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return load(BASE_FILE)


# One-shot containers: the migrators of the services that own a schema (compose/docker-compose.yml).
MIGRATORS = {"backend-migrate"}


def test_every_configured_service_and_infra_is_in_the_stack_with_its_image_variable(base: dict[str, Any]) -> None:
    from pipeline.core.release_images import dependency_infra

    cfg = load_config(check_files=False)
    # the infra the services use; the embedded Prometheus only watches a release on the cluster
    names = [s.name for s in cfg.services] + dependency_infra(cfg)
    assert "prometheus" in cfg.infra and "prometheus" not in dependency_infra(cfg)
    assert set(base["services"]) == {compose_service(n) for n in names} | MIGRATORS
    for n in names:
        image = base["services"][compose_service(n)]["image"]
        assert VAR.match(image) and image.startswith("${" + image_var(n)), (n, image)


def test_the_migrator_is_the_apis_image_run_once_before_it(base: dict[str, Any]) -> None:
    """Smoke migrates as a release does: the backend image's `-migrate`, once, and the API does not migrate."""
    api, mig = base["services"]["backend-api"], base["services"]["backend-migrate"]
    assert mig["image"] == api["image"] and mig["command"] == ["-migrate"] and mig["restart"] == "no"
    assert mig["healthcheck"] == {"disable": True} and mig["networks"] == ["backend"]
    assert mig["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert mig["environment"]["DB_PASSWORD"] == api["environment"]["DB_PASSWORD"]
    assert api["environment"]["MIGRATE_ON_START"] == "false"


def test_no_port_is_published_by_the_base_file(base: dict[str, Any]) -> None:
    for name, svc in base["services"].items():
        assert "ports" not in svc, name


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(base: dict[str, Any]) -> None:
    for name, svc in base["services"].items():
        if name in MIGRATORS:
            continue
        test = svc["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        for dep, cond in (svc.get("depends_on") or {}).items():
            want = "service_completed_successfully" if dep in MIGRATORS else "service_healthy"
            assert cond == {"condition": want}, (name, dep)
    assert set(base["services"]["backend-api"]["depends_on"]) == {"postgres", "redis", "backend-migrate"}
    assert set(base["services"]["chat-server"]["depends_on"]) == {"nats"}


def test_every_container_network_and_volume_carries_the_run_label(base: dict[str, Any]) -> None:
    for kind in ("services", "networks", "volumes"):
        for name, obj in base[kind].items():
            assert "${VEZA_RUN_ID" in str(obj["labels"]["veza.pipeline.run"]), (kind, name)
    assert set(base["volumes"]) == {"pgdata", "redisdata", "streams"}


def test_infra_is_only_on_the_internal_network(base: dict[str, Any]) -> None:
    assert base["networks"]["backend"]["internal"] is True
    for infra in ("postgres", "redis", "nats"):
        assert base["services"][infra]["networks"] == ["backend"], infra


def test_redis_is_append_only(base: dict[str, Any]) -> None:
    assert "--appendonly yes" in " ".join(base["services"]["redis"]["command"])


def test_no_secret_is_written_in_any_compose_file() -> None:
    for f in (BASE_FILE, DEV_FILE, SMOKE_FILE):
        data = load(f)
        for name, svc in data["services"].items():
            env = svc.get("environment") or {}
            for key, value in env.items():
                if re.search(r"PASS|SECRET|TOKEN|AUTH", key):
                    assert VAR.match(str(value)), f"{f.name}: {name}.{key} holds a literal value"


def test_smoke_overlay_publishes_only_ephemeral_loopback_ports() -> None:
    smoke = load(SMOKE_FILE)
    ports = [p for svc in smoke["services"].values() for p in svc.get("ports", [])]
    assert len(ports) == 5
    for p in ports:
        assert re.fullmatch(r"127\.0\.0\.1::\d+", p), p


def test_dev_overlay_publishes_the_four_services_on_loopback_only() -> None:
    dev = load(DEV_FILE)
    assert set(dev["services"]) == {"backend-api", "chat-server", "stream-server", "docs"}
    for name, svc in dev["services"].items():
        (port,) = svc["ports"]
        assert port.startswith("127.0.0.1:${"), (name, port)
