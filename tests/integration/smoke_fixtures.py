"""Fixtures for the smoke tests: the real service images (through the build stage, into a private Release
manifest), per-test manifest copies, tiny broken images, `invoke smoke` as a subprocess, and the engine-side
check that nothing labelled by a run remains.

The four service images are the build stage's own products (tagged <repository>:<tag>, reused by input
digest like `invoke build` does); what a test builds itself (broken images) carries veza.pipeline.run and
is removed. Run directories of test runs (.pipeline/runs/<id>) are removed at the end of each test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import load_config
from pipeline.core.manifest import Manifest
from pipeline.core.paths import ROOT
from pipeline.core.reporter import PlainReporter
from pipeline.core.vocab import LABEL_RUN as RUN_LABEL
from pipeline.tools.compose import PROJECT_LABEL
from pipeline.tools.docker import labelled, remove_labelled
from tests.integration.build_records import built_record

OVERRIDES = Path(__file__).resolve().parent / "smoke_overrides"


_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def smoke_manifest(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Path:
    """A Release manifest (env local) recording the four real images, built or reused by the build stage.

    Each test module imports this fixture (its own definition for pytest), so the result is kept here:
    one build per test session, and every smoke test of the session runs the same images.
    """
    if "manifest" not in _BUILT:
        _BUILT["manifest"] = _build_manifest(tmp_path_factory)
    return _BUILT["manifest"]


def _build_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.local.bases import ensure_bases
    from pipeline.stages.build import execute_plan, make_plan
    from pipeline.versioning.releaseinfo import release_info

    cfg = load_config()
    env = cfg.env("local")
    ensure_bases(config=cfg, say=lambda _line: None)
    info = release_info(cfg, env)
    d = tmp_path_factory.mktemp("smoke-release")
    m = Manifest.new(d / "manifest.json", env=env.name, release_id=info.release_id(env.name), version=info.version)
    plan = make_plan(cfg, env, cfg.services, info, no_cache=False, provision_bases=False)
    results = execute_plan(cfg, plan, info, m, PlainReporter(sink=lambda _l: None), workers=2, fail_fast=True,
                           no_cache=False, log_dir=d / "build-logs")
    bad = [(r.service, r.status, r.reason) for r in results if r.status not in ("built", "reused")]
    assert not bad, f"the service images did not build: {bad}"
    return m.path


@dataclass
class SmokeRun:
    """One smoke run driven by a test: its id, its own manifest copy, and what it leaves behind."""

    run_id: str
    manifest_path: Path
    client: Any
    overrides: list[Path] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.manifest_path.parents[1]

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "local" / "runs" / self.run_id / "smoke"

    @property
    def project(self) -> str:
        return f"veza-smoke-{self.run_id}"

    def manifest(self) -> dict[str, Any]:
        return dict(json.loads(self.manifest_path.read_text()))

    def use_image(self, service: str, image_id: str) -> None:
        """Point one service of this run's manifest at another image (e.g. a broken one)."""
        m = Manifest.load(self.manifest_path)
        build = m.stage_result(service, "build") or {}
        m.record(service, "build", built_record(image_id, **{k: v for k, v in build.items() if k != "image_id"}))

    def build_image(self, tag: str, dockerfile: str, files: dict[str, str]) -> str:
        """A tiny image built for this test, labelled with the run; removed at the end of the test."""
        ctx = self.manifest_path.parent / f"ctx-{tag.replace('/', '-').replace(':', '-')}"
        ctx.mkdir(parents=True, exist_ok=True)
        (ctx / "Dockerfile").write_text(dockerfile)
        for name, text in files.items():
            (ctx / name).write_text(text)
        image, _logs = self.client.images.build(path=str(ctx), tag=tag, labels={RUN_LABEL: self.run_id}, rm=True)
        self.images.append(tag)
        return str(image.id)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"VEZA_STATE_DIR": str(self.state_dir), "VEZA_RUN_ID": self.run_id})
        return env

    def start(self, *extra: str, wait_timeout: float | None = None) -> subprocess.Popen[str]:
        """`invoke smoke --env local` as a subprocess (the real CLI, exit codes included)."""
        overrides = [a for p in self.overrides for a in ("--compose-override", str(p))]
        wait = ["--wait-timeout", str(wait_timeout)] if wait_timeout is not None else []
        return subprocess.Popen(
            [sys.executable, "-m", "invoke", "smoke", "--env", "local", *overrides, *wait, *extra], cwd=ROOT,
            env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def invoke(self, *extra: str, wait_timeout: float | None = None, timeout: float = 400) -> tuple[int, str]:
        p = self.start(*extra, wait_timeout=wait_timeout)
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out + err

    def leftovers(self) -> str:
        """What the engine still holds for this run (by run label and by compose project); '' = nothing."""
        by_run = labelled(RUN_LABEL, self.run_id)
        by_project = labelled(PROJECT_LABEL, self.project)
        parts = [x.describe() for x in (by_run, by_project) if not x.empty()]
        return "; ".join(parts)


@pytest.fixture
def smoke_run(smoke_manifest: Path, tmp_path: Path, docker_client: Any) -> Iterator[SmokeRun]:
    yield from _smoke_run(smoke_manifest, tmp_path, docker_client)


def _smoke_run(smoke_manifest: Path, tmp_path: Path, docker_client: Any) -> Iterator[SmokeRun]:
    run_id = "t" + uuid.uuid4().hex[:10]
    d = tmp_path / run_id / "state" / "local"
    d.mkdir(parents=True)
    shutil.copy(smoke_manifest, d / "manifest.json")
    run = SmokeRun(run_id, d / "manifest.json", docker_client)
    try:
        yield run
    finally:
        remove_labelled(RUN_LABEL, run_id)
        for tag in run.images:
            try:
                docker_client.images.remove(tag, force=True)
            except Exception:
                pass
        shutil.rmtree(run.run_dir, ignore_errors=True)


@pytest.fixture
def smoke_run_factory(smoke_manifest: Path, tmp_path: Path, docker_client: Any) -> Iterator[Any]:
    """Several independent smoke runs in one test (for concurrency)."""
    gens: list[Iterator[SmokeRun]] = []

    def make() -> SmokeRun:
        sub = tmp_path / f"r{len(gens)}"
        sub.mkdir()
        g = _smoke_run(smoke_manifest, sub, docker_client)
        gens.append(g)
        return next(g)

    yield make
    for g in gens:
        for _ in g:
            pass


def wait_for_containers(run: SmokeRun, *, at_least: int = 1, timeout: float = 60) -> list[str]:
    """Block until the run has created containers in the engine (to interrupt it mid-run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = labelled(RUN_LABEL, run.run_id).containers
        if len(names) >= at_least:
            return list(names)
        time.sleep(0.1)
    raise AssertionError(f"run {run.run_id} created no container within {timeout}s")


def interrupt(p: subprocess.Popen[str], sig: signal.Signals = signal.SIGINT, timeout: float = 120) -> tuple[int, str]:
    p.send_signal(sig)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out + err
