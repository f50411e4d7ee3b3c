"""Drives a release-shaped run through `make_reporter()` (the reporter tasks.py uses) for the tmux test.

    python -m tests.integration.live_view_driver STATE_DIR cold|noop|cold-bases [PROBE_IMAGE]

cold: four stages, four services each, 30 tool lines per service (slowly, so the live view is seen running);
noop: the same run again with resume: every stage is recorded and holds, except the check stage verify-images,
which runs again as the real one does (check_only: it never resumes). Ends with the release's summary (table
or line) and report line, as `invoke release` does.
cold-bases: `cold`, whose first stage's pre-flight (outside any stage, as the deploy's cluster start is) provides
a base image that is not present: the real `ensure_bases` builds PROBE_IMAGE (a private name) in the real engine
from a small recipe written under STATE_DIR (FROM the local Debian base, ten one-second steps, a nonce so the
engine's cache cannot skip them), reporting through `reporter_progress(reporter, "bases")` as the pipeline does;
and whose last stage's provisioning replays a cold cluster build's progress (ClusterBuildReplay) while the
other stages run.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from pipeline.contract.context import RunContext
from pipeline.core.config import Base, Config, load_config
from pipeline.core.paths import ROOT
from pipeline.core.progress import reporter_progress
from pipeline.observe.reporters import make_reporter
from pipeline.release.release import print_summary
from pipeline.release.report import write_report
from pipeline.release.runner import open_run, preflight, run_stages
from tests.observe_support import ToolStage
from tests.unit.test_runner import info

PROBE_PARENT = "veza-local/debian:bookworm"   # the local Debian base `invoke bases` provides


def probe_config(cfg: Config, image: str) -> Config:
    """cfg with one base only: `probe`, named `image`, built from a fresh recipe under cfg.state_dir."""
    recipe = cfg.state_dir / "probe-recipe"
    recipe.mkdir(parents=True, exist_ok=True)
    (recipe / "Dockerfile").write_text(
        f"FROM {PROBE_PARENT}\n"
        f"RUN echo 'nonce {image}' && for i in $(seq 1 10); do echo \"probe step $i/10\"; sleep 1; done\n")
    base = Base("probe", upstream="veza-i20b-probe.invalid/probe:1", local=image, recipe=str(recipe))
    return dataclasses.replace(cfg, bases={"probe": base})


class BasesFirst(ToolStage):
    """A ToolStage whose pre-flight provides the probe base (long work outside any stage)."""

    def __init__(self, name: str, probe_cfg: Config, delay_s: float) -> None:
        super().__init__(name, delay_s=delay_s)
        self.probe_cfg = probe_cfg

    def preflight(self, ctx: RunContext) -> None:
        from pipeline.local.bases import ensure_bases

        ensure_bases(force=False, try_pull=False, config=self.probe_cfg, say=ctx.reporter.info,
                     progress=reporter_progress(ctx.reporter, "bases"))


class ClusterBuildReplay(ToolStage):
    """A ToolStage whose provisioning (as the deploy's cluster start does: in the background, while the stages
    before it run, pipeline/release/provisioning.py) reports a cold cluster build: the real
    ClusterBuildProgress over the real build's six steps, at replay speed (one second per step, a heartbeat every
    0.1 s instead of 20 s: ~60 heartbeats), with no compiler run (the shared cluster is never rebuilt here)."""

    def provision(self, ctx: RunContext) -> None:
        from pipeline.local.cluster.build import STEP_TITLES, ClusterBuildProgress

        prog = ClusterBuildProgress({s: 1.0 for s in STEP_TITLES}, ctx.reporter.info,
                                    reporter_progress(ctx.reporter, "cluster"), tick_s=0.1)
        for step in STEP_TITLES:
            prog.start(step)
            for i in range(5):
                prog.beat(f"{i * 100} packages compiled")
                time.sleep(0.2)
            prog.done(step)
        prog.finished("built in 6s (replay): no binaries written")


class CheckStage(ToolStage):
    """A check stage, as verify-images and verify are: it never resumes and changes nothing."""

    check_only = True

    def holds(self, ctx: RunContext) -> str | None:
        return "a check is never taken from the record"


def main(state_dir: str, mode: str, probe_image: str = "") -> None:
    cfg = dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=Path(state_dir))
    env = cfg.env("local")
    reporter = make_reporter()
    delay = 0.0 if mode == "noop" else 0.05
    stages = [(CheckStage if n in ("verify-images", "verify") else ToolStage)(n, delay_s=delay) for n in env.stages]
    if mode == "cold-bases":
        stages[0] = BasesFirst(env.stages[0], probe_config(cfg, probe_image), delay)
        stages[-1] = ClusterBuildReplay(env.stages[-1], delay_s=delay)
    with open_run(cfg, env, reporter, creates_manifest=True, info=info()) as ctx:
        reporter.info(f"release {ctx.manifest.release_id} → {env.name}: {' → '.join(env.stages)} (run {ctx.run_id})")
        preflight(ctx, stages)
        outcomes = run_stages(ctx, stages, resume=mode == "noop")
        paths = write_report(ctx, outcomes, status="ok", error="", duration_s=1.0)
        print_summary(ctx, outcomes, "ok", paths)


if __name__ == "__main__":
    main(*sys.argv[1:4])
