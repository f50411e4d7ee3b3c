"""Fixtures for the service image tests: the four images built from the real Dockerfiles with the local bases,
a per-test network, the infra containers (from `invoke bases` images) and plain HTTP from the host.

Containers are probed from the host through their bridge IP: no published port is needed.
Everything created carries veza.pipeline.run=<run id> and is removed at the end.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.vocab import LABEL_RUN
from pipeline.local.bases import build_args_for, ensure_bases
from pipeline.tools import buildkit

# Fixed build info: the layer cache stays warm across test runs, and /version must echo exactly these.
BUILD_INFO = {"VERSION": "9.8.7-test", "REVISION": "0123456789abcdef0123456789abcdef01234567",
              "CREATED": "2026-01-02T03:04:05Z", "SOURCE": "https://example.invalid/veza"}
SIZE_LIMITS_MB = {"veza-backend-api": 15, "veza-stream-server": 15, "veza-docs": 15, "veza-chat-server": 20}


@dataclass
class ServiceImages:
    run: str
    refs: dict[str, str]
    config: Config


@pytest.fixture(scope="session")
def service_images(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceImages]:
    """Build the four service images once per session (after making sure the bases exist)."""
    cfg = load_config()
    ensure_bases(config=cfg, say=lambda _line: None)
    run = "svc" + uuid.uuid4().hex[:8]
    refs: dict[str, str] = {}
    logs = tmp_path_factory.mktemp("service-images")
    try:
        for svc in cfg.services:
            ref = f"veza-test/{svc.name}:{run}"
            lines: list[str] = []
            rc = buildkit.build(
                buildkit.detect(cfg.build.builder), context=svc.context, dockerfile=svc.dockerfile, tags=[ref],
                build_args={**build_args_for(cfg.bases, svc.bases), **BUILD_INFO},
                labels={LABEL_RUN: run}, no_cache=False, on_line=lines.append, timeout=1800,
                iidfile=logs / f"{svc.name}.iid")
            assert rc == 0, f"build of {svc.name} failed:\n" + "\n".join(lines[-30:])
            refs[svc.name] = ref
        yield ServiceImages(run, refs, cfg)
    finally:
        for ref in refs.values():
            try:
                docker_client.images.remove(ref, force=True)
            except Exception:  # already gone
                pass


@dataclass
class Sandbox:
    """One test's network and containers; removed (with their anonymous volumes) at teardown."""
    client: Any
    run: str
    network: Any
    containers: list[Any] = field(default_factory=list)
    volumes: list[Any] = field(default_factory=list)

    def start(self, image: str, alias: str, *, env: dict[str, str] | None = None, **kw: Any) -> Any:
        net = self.network.name
        c = self.client.containers.run(
            image, detach=True, name=f"{self.run}-{alias}-{len(self.containers)}", environment=env or {},
            labels={LABEL_RUN: self.run}, network=net,
            networking_config={net: self.client.api.create_endpoint_config(aliases=[alias])}, **kw)
        self.containers.append(c)
        return c

    def volume(self, name: str) -> Any:
        v = self.client.volumes.create(name=f"{self.run}-{name}", labels={LABEL_RUN: self.run})
        self.volumes.append(v)
        return v

    def ip(self, container: Any) -> str:
        container.reload()
        return str(container.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"])

    def infra(self, name: str, **kw: Any) -> Any:
        """Start an infra image (postgres, redis, nats) built by `invoke bases`, under its service name."""
        cfg = load_config(check_files=False)
        image = cfg.bases[cfg.infra[name].base].local
        # The user and database compose and the cluster create (compose/docker-compose.yml, local/infra.py).
        env = ({"POSTGRES_PASSWORD": "veza-test-pw", "POSTGRES_USER": "veza", "POSTGRES_DB": "veza"}
               if name == "postgres" else {})
        return self.start(image, name, env=env, **kw)


def wait_healthy(container: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        state = container.attrs["State"]
        health = (state.get("Health") or {}).get("Status")
        if health == "healthy":
            return
        if not state.get("Running"):
            raise AssertionError(f"{container.name} exited: {container.logs(tail=20).decode(errors='replace')}")
        time.sleep(0.3)
    raise AssertionError(f"{container.name} not healthy after {timeout}s: "
                         f"{container.logs(tail=20).decode(errors='replace')}")


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def http_call(host: str, port: int, path: str, method: str = "GET", body: bytes | None = None,
              timeout: float = 5) -> Reply:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return Reply(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()})
    finally:
        conn.close()


def wait_http(host: str, port: int, path: str = "/health", timeout: float = 20,
              until: Callable[[Reply], bool] = lambda r: r.status == 200) -> Reply:
    deadline = time.monotonic() + timeout
    last: Reply | Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = http_call(host, port, path, timeout=3)
            if until(last):
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"http://{host}:{port}{path} not as expected after {timeout}s: {last!r}")


@pytest.fixture
def sandbox(docker_client: Any) -> Iterator[Sandbox]:
    run = "t" + uuid.uuid4().hex[:10]
    net = docker_client.networks.create(f"{run}-net", driver="bridge", labels={LABEL_RUN: run})
    box = Sandbox(docker_client, run, net)
    try:
        yield box
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run}"}):
            c.remove(force=True, v=True)
        for v in docker_client.volumes.list(filters={"label": f"{LABEL_RUN}={run}"}):
            v.remove(force=True)
        net.remove()


def stop_timed(container: Any, grace: int = 10) -> tuple[float, int]:
    """SIGTERM (docker stop) and the seconds until the process exited, with its exit code."""
    t0 = time.monotonic()
    container.stop(timeout=grace)
    elapsed = time.monotonic() - t0
    container.reload()
    return elapsed, int(container.attrs["State"]["ExitCode"])
