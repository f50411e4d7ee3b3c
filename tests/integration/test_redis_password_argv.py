"""No password on a process command line: Redis gets it as configuration on stdin, in compose and on the cluster.

The real Redis image runs the exact command of compose/docker-compose.yml and the exact container args the
local cluster's infra Deployment gets (pipeline/local/infra.py); the password must work (authenticated PING
answers PONG, an unauthenticated one is refused) and appear in no /proc/<pid>/cmdline of the container.
redis-server overwrites its own argv with a process title once started, so the argv it was *given* is also
recorded: the same command runs once more with a recording redis-server first on PATH (/usr/local/bin).
"""

from __future__ import annotations

import io
import secrets
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.local.infra import _container
from pipeline.tools import docker as docker_tool

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]
REDIS = "veza-local/redis:7"


def _compose_command() -> list[str]:
    doc = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    # compose turns "$$" into a literal "$" for the container (its own interpolation escape)
    return [part.replace("$$", "$") for part in doc["services"]["redis"]["command"]]


def _cluster_args() -> list[str]:
    container = _container("redis", REDIS, 6379, "veza-infra")
    assert {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "veza-infra", "key": "redis-password"}}} \
        in container["env"]
    assert not any("$(" in a for a in container["args"])   # the kubelet would expand $(VAR) into the argv
    return list(container["args"])


@pytest.fixture
def run_redis(docker_client: Any) -> Iterator[Any]:
    if not docker_tool.image_id(REDIS):
        pytest.fail(f"{REDIS} is not in the engine: run `invoke bases` first")
    started: list[Any] = []

    def run(command: list[str], password: str) -> Any:
        c = docker_client.containers.run(REDIS, command, detach=True, environment={"REDIS_PASSWORD": password},
                                         labels={"veza.pipeline.run": "t" + uuid.uuid4().hex[:10]})
        started.append(c)
        return c

    yield run
    for c in started:
        c.remove(force=True, v=True)  # its image declares VOLUME /data: no anonymous volume left


def _redis_cli(c: Any, password: str | None) -> str:
    env = {"REDISCLI_AUTH": password} if password else {}
    res = c.exec_run(["redis-cli", "-h", "127.0.0.1", "ping"], environment=env)
    return str(res.output.decode().strip())


@pytest.mark.parametrize("where", ["compose", "cluster"])
def test_the_redis_password_works_and_is_on_no_command_line(where: str, run_redis: Any) -> None:
    password = "pw-" + secrets.token_hex(12)
    c = run_redis(_compose_command() if where == "compose" else _cluster_args(), password)
    deadline = time.monotonic() + 30
    while _redis_cli(c, password) != "PONG":
        c.reload()
        assert c.status == "running" and time.monotonic() < deadline, c.logs().decode()[-500:]
        time.sleep(0.3)
    assert "NOAUTH" in _redis_cli(c, None)
    cmdlines = c.exec_run(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]).output.decode()
    assert "redis-server" in cmdlines
    assert password not in cmdlines
    assert password not in str(c.top()["Processes"])   # the engine's view of the processes, from the host


RECORDER = b"""#!/bin/sh
for a in "$@"; do printf 'ARG %s\\n' "$a"; done
echo STDIN; cat
"""


def _recorder_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("redis-server")
        info.size, info.mode = len(RECORDER), 0o755
        tar.addfile(info, io.BytesIO(RECORDER))
    return buf.getvalue()


@pytest.mark.parametrize("where", ["compose", "cluster"])
def test_redis_server_is_given_the_password_on_stdin_not_in_its_argv(where: str, docker_client: Any) -> None:
    if not docker_tool.image_id(REDIS):
        pytest.fail(f"{REDIS} is not in the engine: run `invoke bases` first")
    password = "pw-" + secrets.token_hex(12)
    c = docker_client.containers.create(REDIS, _compose_command() if where == "compose" else _cluster_args(),
                                        environment={"REDIS_PASSWORD": password},
                                        labels={"veza.pipeline.run": "t" + uuid.uuid4().hex[:10]})
    try:
        c.put_archive("/usr/local/bin", _recorder_tar())
        c.start()
        assert c.wait(timeout=30)["StatusCode"] == 0
        out = c.logs().decode()
    finally:
        c.remove(force=True, v=True)
    argv, _, stdin = out.partition("STDIN\n")
    assert "ARG -" in argv and "ARG --dir" in argv     # the recorder really stood in for redis-server
    assert password not in argv
    assert f'requirepass "{password}"' in stdin
