"""The runner with fake stages (no engine, no git): resume, skip, failures and exit codes, interrupt, merge."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.config import Config, load_config
from pipeline.core.errors import Interrupted, PolicyBlocked, StageFailed
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.paths import ROOT
from pipeline.core.reporter import PlainReporter
from pipeline.core.vocab import StageStatus
from pipeline.release.runner import open_run, run_stages
from pipeline.versioning.releaseinfo import ReleaseInfo


class FakeStage(BaseStage):
    """A stage whose behaviour the test sets: what run() does, whether the world still holds."""

    def __init__(self, name: str, *, fail: BaseException | None = None, holds: str | None = None,
                 skip: str | None = None, fields: dict[str, Any] | None = None) -> None:
        self.name, self.fail, self._holds, self._skip = name, fail, holds, skip
        self.fields = fields or {}
        self.ran = 0
        self.asked = 0

    def skip(self, ctx: RunContext) -> str | None:
        return self._skip

    def preflight(self, ctx: RunContext) -> None:
        pass

    def holds(self, ctx: RunContext) -> str | None:
        self.asked += 1
        return self._holds

    def run(self, ctx: RunContext) -> StageSummary:
        self.ran += 1
        if self.fail is not None:
            raise self.fail
        for name in ctx.selected():
            ctx.manifest.record(name, "build" if self.name == "build" else "scan",
                                {"status": "built" if self.name == "build" else "pass", "image_id": "sha256:1"})
        return StageSummary(f"{self.name} done", dict(self.fields))


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=tmp_path / "state")


def info(key: str = "abc12345") -> ReleaseInfo:
    return ReleaseInfo(version={"version": "0.1.0-dev.1", "short_sha": key}, tags=("sha-" + key,), revision=key * 5,
                       version_label="0.1.0-dev.1", created="2026-11-29T00:00:00Z", release_key=key)


def run(cfg: Config, stages: list[FakeStage], *, env: str = "local", resume: bool = False,
        key: str = "abc12345", lines: list[str] | None = None) -> Manifest:
    rep = PlainReporter(sink=(lines if lines is not None else []).append)
    with open_run(cfg, cfg.env(env), rep, creates_manifest=True, info=info(key)) as ctx:
        run_stages(ctx, stages, resume=resume)
        return ctx.manifest


def test_the_runner_alone_records_each_stage_with_the_summary_merged(cfg: Config) -> None:
    m = run(cfg, [FakeStage("build", fields={"built": 4}), FakeStage("scan", fields={"db_version": "v2"})])
    build, scan = m.stage("build"), m.stage("scan")
    assert build is not None and build.status == "ok" and build.fields["built"] == 4 and build.detail == "build done"
    assert scan is not None and scan.fields["db_version"] == "v2"
    assert list(scan.services) == [s.name for s in cfg.services] and scan.run_id == build.run_id


def test_resume_skips_only_what_still_holds(cfg: Config) -> None:
    run(cfg, [FakeStage("build"), FakeStage("scan")])
    build, scan = FakeStage("build"), FakeStage("scan", holds="the Trivy DB changed")
    lines: list[str] = []
    m = run(cfg, [build, scan], resume=True, lines=lines)
    assert (build.asked, build.ran) == (1, 0)        # recorded ok and holds: not redone
    assert (scan.asked, scan.ran) == (1, 1)          # recorded ok but the world changed: redone, and said why
    assert any("the Trivy DB changed" in line for line in lines)
    assert m.stage("build").status == "ok"       # type: ignore[union-attr]


def test_no_resume_without_the_flag_or_for_another_release(cfg: Config) -> None:
    run(cfg, [FakeStage("build")])
    again = FakeStage("build")
    run(cfg, [again])                                # a task (not a release) always runs its stage
    assert again.ran == 1 and again.asked == 0
    other = FakeStage("build")
    run(cfg, [other], resume=True, key="def67890")   # another commit: a new manifest, nothing to resume
    assert other.ran == 1 and other.asked == 0


def test_a_skipped_stage_is_recorded_with_its_reason(cfg: Config) -> None:
    m = run(cfg, [FakeStage("scan", skip="no scanner configured")])
    rec = m.stage("scan")
    assert rec is not None and rec.status == StageStatus.SKIPPED and rec.detail == "no scanner configured"


@pytest.mark.parametrize(("error", "status", "code"), [
    (PolicyBlocked("gate blocked x"), StageStatus.BLOCKED, 3),
    (StageFailed("build failed for y"), StageStatus.FAILED, 1),
])
def test_a_failure_is_recorded_with_its_exit_code_and_stops_the_run(cfg: Config, error: Exception,
                                                                     status: StageStatus, code: int) -> None:
    error.record["logs"] = "/tmp/logs"                # type: ignore[attr-defined]
    after = FakeStage("push")
    with pytest.raises(type(error)) as got:
        run(cfg, [FakeStage("build", fail=error), after])
    assert got.value.exit_code == code                # type: ignore[attr-defined]
    m = Manifest.load(manifest_path(cfg.state_dir, "local"))
    rec = m.stage("build")
    assert rec is not None and rec.status == status and rec.exit_code == code and rec.fields["logs"] == "/tmp/logs"
    assert after.ran == 0 and m.stage("push") is None


def test_ctrl_c_is_recorded_as_interrupted_and_maps_to_130(cfg: Config) -> None:
    with pytest.raises(Interrupted) as got:
        run(cfg, [FakeStage("push", fail=KeyboardInterrupt())])
    assert got.value.exit_code == 130
    rec = Manifest.load(manifest_path(cfg.state_dir, "local")).stage("push")
    assert rec is not None and rec.status == StageStatus.INTERRUPTED


def test_two_environments_keep_two_manifests(cfg: Config) -> None:
    barrier = threading.Barrier(2)

    class Slow(FakeStage):
        def run(self, ctx: RunContext) -> StageSummary:
            barrier.wait(timeout=10)                  # both runs are inside their lock at the same time
            return super().run(ctx)

    errors: list[BaseException] = []

    def go(env: str) -> None:
        try:
            run(cfg, [Slow("build")], env=env)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(e,)) for e in ("local", "dev")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors
    local = Manifest.load(manifest_path(cfg.state_dir, "local"))
    dev = Manifest.load(manifest_path(cfg.state_dir, "dev"))
    assert (local.env, dev.env) == ("local", "dev") and local.path != dev.path
    assert local.stage("build") is not None and dev.stage("build") is not None


def test_a_second_run_on_the_same_environment_is_refused_while_one_holds_the_lock(cfg: Config) -> None:
    from pipeline.core.lock import LockHeld

    rep = PlainReporter(sink=lambda _l: None)
    with open_run(cfg, cfg.env("local"), rep, creates_manifest=True, info=info()):
        with pytest.raises(LockHeld, match="another release to local is running"):
            with open_run(cfg, cfg.env("local"), rep, creates_manifest=True, info=info()):
                pass
