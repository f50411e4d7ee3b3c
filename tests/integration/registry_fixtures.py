"""Fixtures of the registry/push/promote tests: real registries on 127.0.0.1:5100-5199, tiny real images.

Every image a test builds is FROM scratch + one file, labelled veza.pipeline.run=<run id>, and removed after.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.manifest import Manifest
from pipeline.local.registry import LocalRegistry
from tests.integration.build_records import built_record
from tests.ports import PortPool, first_free


class StageResults(dict[str, dict[str, Any]]):
    """Each service's recorded result, plus the stage summary the runner would record (`.summary`)."""

    def __init__(self, results: dict[str, dict[str, Any]], summary: Any) -> None:
        super().__init__(results)
        self.summary = summary


def run_push(services: list[str] | None, env_name: str, *, config: Config, manifest: Manifest,
             workers: int | None = None, log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """The push stage on one manifest, as the tests drive it: each service's recorded push result."""
    from pipeline.core.reporter import PlainReporter
    from pipeline.stages.push import push_images

    reporter = PlainReporter(sink=log or (lambda _line: None))
    summary = push_images(config, config.env(env_name), manifest, reporter, services, workers=workers)
    return StageResults({n: manifest.stage_result(n, "push") or {} for n in (services or manifest.services())},
                        summary)


def run_promote(src: str, dst: str, services: list[str] | None, *, config: Config, manifest: Manifest,
                via: str | None = None, log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Promotion between two environments of one config, as the tests drive it."""
    from pipeline.core.reporter import PlainReporter
    from pipeline.release.promote import run_promote as promote

    return promote(config, config.env(src), config.env(dst), manifest, PlainReporter(sink=log or (lambda _l: None)),
                   services, via=via)

PORTS = range(5100, 5200)


free_port = PortPool(PORTS).take


SERVICES = ("svc-a", "svc-b", "svc-c", "svc-d")


def write_config(path: Path, *, registries: dict[str, str], namespace: str, attempts: int = 4,
                 ceiling: float = 0.5, promote_requires: dict[str, list[str]] | None = None,
                 services: tuple[str, ...] = SERVICES, env_keys: dict[str, dict[str, str]] | None = None) -> Config:
    """A pipeline.toml with the given environments → registry addresses; loaded without file checks.
    `env_keys`: more string keys per environment (e.g. registry_ca_file, registry_username_env)."""
    promote_requires = promote_requires or {}
    lines = [
        "[project]", 'name = "veza"', 'state_dir = ".pipeline"', "",
        "[registry]", 'address = "127.0.0.1:5100"', f'namespace = "{namespace}"',
        'username_env = "VEZA_TEST_REGISTRY_USER"', 'password_env = "VEZA_TEST_REGISTRY_PASSWORD"',
        f"retry_attempts = {attempts}", f"retry_ceiling_s = {ceiling}", "timeout_s = 60", "",
    ]
    for i, name in enumerate(services):
        lines += ["[[services]]", f'name = "{name}"', f'context = "ctx/{name}"',
                  f'dockerfile = "ctx/{name}/Dockerfile"', f"port = {18080 + i}", ""]
    for env, address in registries.items():
        tags = '["semver", "semver-minor"]' if env == "prod" else '["sha", "branch"]'
        lines += [f"[environments.{env}]", f'registry = "{address}"',
                  f'registry_namespace = "{namespace}-{env}"', f'namespace = "veza-{env}"',
                  f'values_file = "values-{env}.yaml"', 'stages = ["build", "push"]', f"tags = {tags}"]
        if env in promote_requires:
            req = ", ".join(f'"{r}"' for r in promote_requires[env])
            lines.append(f"promote_requires = [{req}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in (env_keys or {}).get(env, {}).items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return load_config(path, check_files=False)


@dataclass
class BuiltImage:
    service: str
    image_id: str
    repository: str
    tags: list[str]


def build_tiny_image(client: Any, run_id: str, repository: str, tags: list[str], content: bytes) -> str:
    """FROM scratch + one file, labelled with the run id, tagged repository:tag for every tag."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY payload /payload\n"), ("payload", content)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    image, _ = client.images.build(fileobj=buf, custom_context=True, labels={"veza.pipeline.run": run_id},
                                   rm=True, forcerm=True)
    for tag in tags:
        image.tag(repository, tag)
    return str(image.id)


def make_manifest(path: Path, cfg: Config, env: str, images: list[BuiltImage]) -> Manifest:
    m = Manifest.new(path, env=env, release_id=f"{env}-test", version={
        "version": "1.4.2", "release": True, "on_tag": True, "sha": "abcdef1234567890", "short_sha": "abcdef1",
        "branch": "main"})
    for img in images:
        m.set_service(img.service, repository=img.repository, tags=img.tags, input_digest="sha256:" + "0" * 64)
        m.record(img.service, "build", built_record(img.image_id, commit="abcdef1234567890"))
    return m


@pytest.fixture
def engine(docker_client: Any) -> Any:
    return docker_client


@pytest.fixture
def image_factory(engine: Any, run_id: str) -> Iterator[Callable[..., BuiltImage]]:
    """Builds tiny labelled images; removes every image of this run (and its tags) afterwards."""
    def make(service: str, repository: str, tags: list[str], size: int = 64) -> BuiltImage:
        payload = f"{service} {run_id} {uuid.uuid4().hex}\n".encode() + b"x" * size
        iid = build_tiny_image(engine, run_id, repository, tags, payload)
        return BuiltImage(service, iid, repository, tags)

    yield make
    remove_run_images(engine, run_id)


def remove_run_images(client: Any, run_id: str) -> None:
    for img in client.images.list(filters={"label": f"veza.pipeline.run={run_id}"}):
        try:
            client.images.remove(img.id, force=True)
        except Exception:  # already gone
            pass


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        yield reg


class FlakyProxy:
    """A loopback TCP proxy in front of a real registry that resets chosen connections.

    `reset_every=n`: every n-th accepted connection is reset at once (SO_LINGER 0 → RST), at most
    `max_resets` times (a burst of trouble, then a healthy network).
    `drop_all=True`: every connection is reset (the registry looks down).
    """

    def __init__(self, target_port: int, reset_every: int = 0, max_resets: int = 1_000_000) -> None:
        self.target_port = target_port
        self.reset_every = reset_every
        self.max_resets = max_resets
        self.drop_all = False
        self.accepted = 0
        self.resets = 0
        self.port = free_port()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.drop_all or (self.reset_every and self.accepted % self.reset_every == 0
                                 and self.resets < self.max_resets):
                self.resets += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
                continue
            threading.Thread(target=self._pipe_pair, args=(conn,), daemon=True).start()

    def _pipe_pair(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        t = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
        t.start()
        self._pipe(client, upstream)
        t.join(timeout=30)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self._sock.close()
        self._thread.join(timeout=5)


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def free_loopback_port(first: int, last: int) -> int:
    """The first port of 127.0.0.1:first-last (inclusive) nothing listens on: a test area's own allocation."""
    return first_free(range(first, last + 1))
