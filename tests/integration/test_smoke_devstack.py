"""`invoke up / logs / down` on the real engine: the developer stack, on test ports 18100-18103 and its own
stack name (never the developer's `veza-dev` nor ports 8080-8083)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.core.paths import ROOT
from pipeline.core.vocab import LABEL_RUN as RUN_LABEL
from pipeline.stages.probes import http
from pipeline.tools.docker import labelled, remove_labelled
from tests.integration.smoke_fixtures import *  # noqa: F403 - the pytest fixtures

pytestmark = [pytest.mark.engine, pytest.mark.slow]
PORTS = {"BACKEND_API_PORT": 18100, "CHAT_SERVER_PORT": 18101, "STREAM_SERVER_PORT": 18102, "DOCS_PORT": 18103}


@pytest.fixture
def dev_env(smoke_manifest: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    name = "t-devstack-" + uuid.uuid4().hex[:8]
    state = tmp_path / "state"
    (state / "local").mkdir(parents=True)
    shutil.copy(smoke_manifest, state / "local" / "manifest.json")
    env = {**os.environ, "VEZA_STATE_DIR": str(state), "VEZA_STACK_NAME": name,
           **{k: str(v) for k, v in PORTS.items()}}
    try:
        yield env
    finally:
        remove_labelled(RUN_LABEL, name)
        shutil.rmtree(state / "stack" / name, ignore_errors=True)


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def test_up_logs_down_keeps_data_until_volumes_are_removed(dev_env: dict[str, str]) -> None:
    name = dev_env["VEZA_STACK_NAME"]
    rc, out = invoke(dev_env, "up")
    assert rc == 0, out
    assert "backend-api      http://127.0.0.1:18100" in out
    env_file = Path(dev_env["VEZA_STATE_DIR"]) / "stack" / name / "compose.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    ready = http("GET", "http://127.0.0.1:18100/ready")
    assert ready.status == 200 and '"ready":true' in ready.text, ready.summary()
    data = secrets.token_bytes(4096)
    assert http("PUT", "http://127.0.0.1:18102/streams/devstack", body=data).status == 201

    rc, out = invoke(dev_env, "logs", "--service", "veza-stream-server")
    assert rc == 0 and '"path":"/streams/devstack"' in out, out
    rc, out = invoke(dev_env, "logs", "--service", "no-such")
    assert rc == 2 and "unknown service 'no-such'" in out, out

    # down keeps the volumes: the stored stream survives a restart.
    rc, out = invoke(dev_env, "down")
    assert rc == 0, out
    left = labelled(RUN_LABEL, name)
    assert not left.containers and not left.networks and len(left.volumes) == 3, left
    rc, out = invoke(dev_env, "up")
    assert rc == 0, out
    assert http("GET", "http://127.0.0.1:18102/streams/devstack").body == data

    rc, out = invoke(dev_env, "down", "--volumes")
    assert rc == 0, out
    assert labelled(RUN_LABEL, name).empty()
    assert not env_file.exists()


def test_up_without_a_manifest_is_one_clear_line(dev_env: dict[str, str], tmp_path: Path) -> None:
    env = {**dev_env, "VEZA_STATE_DIR": str(tmp_path / "empty-state")}
    rc, out = invoke(env, "up")
    assert rc == 2, out
    assert out.strip().splitlines()[-1].startswith("error: environment local has no Release manifest yet"), out
    assert labelled(RUN_LABEL, env["VEZA_STACK_NAME"]).empty()
