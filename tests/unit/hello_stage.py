"""A trivial stage that lives in the tests, registered by test_add_a_stage.py: it leaves a file per release,
and its holds() checks that the file is still there."""

from __future__ import annotations

from pathlib import Path

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary


class HelloStage(BaseStage):
    name = "hello"

    @staticmethod
    def greeting(ctx: RunContext) -> Path:
        return ctx.cfg.state_dir / "hello" / f"{ctx.manifest.release_id}.txt"

    def holds(self, ctx: RunContext) -> str | None:
        return None if self.greeting(ctx).is_file() else "the greeting is gone; greeting again"

    def run(self, ctx: RunContext) -> StageSummary:
        path = self.greeting(ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(" ".join(f"hello {s}" for s in ctx.selected()))
        return StageSummary(f"greeted {len(ctx.selected())} service(s)", {"greeted": ctx.selected()})
