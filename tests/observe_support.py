"""Stages and a run helper for the observability tests: real runner, real reporter chain, real tools (sh)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.config import Config
from pipeline.core.errors import StageFailed
from pipeline.core.reporter import PlainReporter, Reporter
from pipeline.observe.observed import ObservedReporter
from pipeline.release.report import write_report
from pipeline.release.runner import open_run, run_stages
from pipeline.tools import proc
from tests.unit.test_runner import info


class ToolStage(BaseStage):
    """A stage that works per service in worker threads, as build and push do, and calls a real tool."""

    def __init__(self, name: str, *, fail_service: str = "", skip: str | None = None, delay_s: float = 0.0) -> None:
        self.name, self.fail_service, self._skip, self.delay_s = name, fail_service, skip, delay_s
        self.traceparents: list[str] = []

    def skip(self, ctx: RunContext) -> str | None:
        return self._skip

    def holds(self, ctx: RunContext) -> str | None:
        return None

    def run(self, ctx: RunContext) -> StageSummary:
        def work(service: str) -> None:
            for i in range(30):
                ctx.reporter.step(self.name, service, f"{service} line {i}")
                time.sleep(self.delay_s)
            out = proc.run(["sh", "-c", 'echo "$TRACEPARENT"'], timeout=10).stdout.strip()
            self.traceparents.append(out)
            failed = service == self.fail_service
            ctx.reporter.step(self.name, service, "exited 1" if failed else "done in 0.1s",
                              "failed" if failed else "done")

        threads = [threading.Thread(target=work, args=(s,)) for s in ctx.selected()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.fail_service:
            raise StageFailed(f"{self.name}: {self.fail_service} failed")
        return StageSummary(f"{len(threads)} done")



def run_observed(cfg: Config, stages: list[ToolStage], lines: list[str] | None = None,
                 display: Reporter | None = None, report: bool = False) -> Path:
    """One run of `stages` on cfg's local environment through ObservedReporter; returns the run directory."""
    rep = ObservedReporter(display or PlainReporter(sink=(lines if lines is not None else []).append))
    run_dir: Path | None = None
    try:
        with open_run(cfg, cfg.env("local"), rep, creates_manifest=True, info=info()) as ctx:
            run_dir = ctx.run_dir
            status, error = "ok", ""
            try:
                run_stages(ctx, stages)
            except StageFailed as exc:
                status, error = "failed", exc.one_line()
                raise
            finally:
                if report:
                    write_report(ctx, ctx.state.outcomes, status=status, error=error, duration_s=1.0)
    except StageFailed:
        pass
    assert run_dir is not None
    return run_dir
