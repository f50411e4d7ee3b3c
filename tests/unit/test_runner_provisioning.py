"""Provisioning overlaps the stages before it (the cold path's cluster build runs during the builds), is awaited
before its own stage, stops the run at the next boundary when it fails, and shows on the report's timeline."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.contract.context import RunContext
from pipeline.contract.stage import StageSummary
from pipeline.core.config import Config
from pipeline.core.errors import StageFailed
from pipeline.core.reporter import PlainReporter
from pipeline.release.html_report import timeline_svg
from pipeline.release.runner import open_run, preflight, run_stages
from tests.unit.test_runner import FakeStage, cfg, info

__all__ = ["cfg"]   # the fixture, shared with test_runner.py


class Provisioned(FakeStage):
    """A stage with a provision(): it signals when it starts, and ends when `release` is set (or fails)."""

    def __init__(self, name: str, *, fail: BaseException | None = None, holds: str | None = None) -> None:
        super().__init__(name, holds=holds)
        self.provision_fail = fail
        self.started, self.release, self.finished = threading.Event(), threading.Event(), threading.Event()
        self.failed = threading.Event()

    def provision(self, ctx: RunContext) -> None:
        self.started.set()
        assert self.release.wait(10), "the earlier stage never let the provisioning go on"
        if self.provision_fail is not None:
            self.failed.set()
            raise self.provision_fail
        time.sleep(0.1)   # long enough to be drawn on the timeline (no-op provisions are not)
        self.finished.set()

    def holds(self, ctx: RunContext) -> str | None:
        assert self.finished.is_set(), "holds() looked at the world before its provisioning ended"
        return super().holds(ctx)

    def run(self, ctx: RunContext) -> StageSummary:
        assert self.finished.is_set(), "run() started before its provisioning ended"
        return super().run(ctx)


class WaitsFor(FakeStage):
    """An earlier stage whose run() only returns once `cond` holds (the overlap, observed)."""

    def __init__(self, name: str, cond: threading.Event, *, before: threading.Event | None = None,
                 then: threading.Event | None = None) -> None:
        super().__init__(name)
        self.cond, self.before, self.then = cond, before, then

    def run(self, ctx: RunContext) -> StageSummary:
        if self.before is not None:
            self.before.set()
        assert self.cond.wait(10), f"{self.name} ran to its end without the provisioning having started"
        if self.then is not None:
            self.then.set()
        return super().run(ctx)


def _run(cfg: Config, stages: list[FakeStage], resume: bool = False) -> RunContext:
    rep = PlainReporter(sink=[].append)
    with open_run(cfg, cfg.env("local"), rep, creates_manifest=True, info=info()) as ctx:
        preflight(ctx, stages)
        try:
            run_stages(ctx, stages, resume=resume)
        finally:
            ctx.state.phases.sort(key=lambda p: p.started)
        return ctx


def test_a_later_stage_is_provisioned_while_the_earlier_ones_run(cfg: Config) -> None:
    deploy = Provisioned("deploy")
    build = WaitsFor("build", deploy.started, then=deploy.release)
    ctx = _run(cfg, [build, deploy])
    assert build.ran == 1 and deploy.ran == 1
    names = [p.name for p in ctx.state.phases]
    assert names == ["preflight", "provision deploy"] and ctx.state.phases[1].status == "ok"


def test_holds_waits_for_the_provisioning_on_resume(cfg: Config) -> None:
    first = Provisioned("deploy")
    first.release.set()
    _run(cfg, [FakeStage("build"), first])
    again = Provisioned("deploy")
    threading.Timer(0.3, again.release.set).start()
    _run(cfg, [FakeStage("build"), again], resume=True)
    assert again.asked == 1 and again.ran == 0   # resumed, after its provisioning


def test_a_failed_provisioning_stops_the_run_at_the_next_stage_boundary(cfg: Config) -> None:
    deploy = Provisioned("deploy", fail=StageFailed("the cluster did not start", "see its logs"))
    build = WaitsFor("build", deploy.failed, before=deploy.release)   # the failure comes while build runs
    scan = FakeStage("scan")
    rep = PlainReporter(sink=[].append)
    with open_run(cfg, cfg.env("local"), rep, creates_manifest=True, info=info()) as ctx:
        with pytest.raises(StageFailed, match="the cluster did not start"):
            run_stages(ctx, [build, scan, deploy])
        record = ctx.manifest.stage("deploy")
    assert build.ran == 1 and scan.ran == 0 and deploy.ran == 0
    assert record is not None and record.status == "failed" and "the cluster did not start" in (record.error or "")
    assert [p.status for p in ctx.state.phases if p.name == "provision deploy"] == ["failed"]


def test_the_timeline_draws_the_phases_with_their_own_bars() -> None:
    svg = timeline_svg([{"name": "build", "status": "ok", "started": 105.0, "duration_s": 40}], [],
                       phases=[{"name": "preflight", "status": "ok", "started": 100.0, "duration_s": 0.4},
                               {"name": "provision deploy", "status": "ok", "started": 100.4, "duration_s": 300}])
    assert 'data-phase="preflight"' in svg and 'data-phase="provision deploy"' in svg and 'data-stage="build"' in svg
    assert svg.index('data-phase="provision deploy"') < svg.index('data-stage="build"')
