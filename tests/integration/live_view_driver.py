"""Drives a release-shaped run through `make_reporter()` (the reporter tasks.py uses) for the tmux test.

    python -m tests.integration.live_view_driver STATE_DIR cold|noop

cold: four stages, four services each, 30 tool lines per service (slowly, so the live view is seen running);
noop: the same run again with resume: every stage is recorded and holds. Ends with the release's summary
table and report line, as `invoke release` does.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.core.paths import ROOT
from pipeline.core.reporter import make_reporter
from pipeline.release.release import print_summary
from pipeline.release.report import write_report
from pipeline.release.runner import open_run, run_stages
from tests.observe_support import ToolStage
from tests.unit.test_runner import info


def main(state_dir: str, mode: str) -> None:
    cfg = dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=Path(state_dir))
    env = cfg.env("local")
    reporter = make_reporter()
    stages = [ToolStage(n, delay_s=0.0 if mode == "noop" else 0.05) for n in env.stages]
    with open_run(cfg, env, reporter, creates_manifest=True, info=info()) as ctx:
        reporter.info(f"release {ctx.manifest.release_id} → {env.name}: {' → '.join(env.stages)} (run {ctx.run_id})")
        outcomes = run_stages(ctx, stages, resume=mode == "noop")
        paths = write_report(ctx, outcomes, status="ok", error="", duration_s=1.0)
        print_summary(ctx, outcomes, "ok", paths)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
