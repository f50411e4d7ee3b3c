"""Shared test fixtures. Engine-backed tests fail (never skip) when the engine is missing: CI must be honest.
Under `CI=true` a skip or an xfail is itself a failure (`tests/no_skip_under_ci.py`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("VEZA_ROOT", str(ROOT))

# Fixture modules shared across test files (each area keeps its fixtures in its own module).
# pytester: tests/unit/test_no_skip_under_ci.py runs a tiny suite through it.
pytest_plugins = ["pytester", "tests.no_skip_under_ci", "tests.lanes",
                  "tests.integration.build_fixtures", "tests.integration.cluster_fixtures",
                  "tests.integration.scan_fixtures", "tests.integration.services_fixtures",
                  "tests.integration.remote_engine",
                  "tests.integration.trust.trust_fixtures", "tests.integration.tls_registry_fixtures"]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def run_id() -> str:
    """A unique id for the objects one test creates (label veza.pipeline.run=<id>)."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    import docker

    client = docker.from_env(timeout=300)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run: python3 -m pipeline.machine.bootstrap")
    yield client
    client.close()
