"""The one runner: `invoke build|scan|smoke|push|deploy|verify` and `invoke release` run Stage objects here.

    open_run(cfg, env, …)  → RunContext (the environment's manifest, a run directory, the reporter)
    run_stages(ctx, stages, resume=…)
        for each stage: skip? → (resume and recorded ok and holds()?) → run() → the runner records
        `stages.<name>` from the returned StageSummary (or from the error), and nothing else does.

A release adds the git gates, the confirmation, resume and the report (pipeline.release.release).
The stages: pipeline/core/stage_registry.py (which class, imported on use); their shape: pipeline/contract.
"""

from __future__ import annotations

import importlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pipeline.contract.context import Outcome, Phase, RunContext
from pipeline.contract.options import RunOptions
from pipeline.contract.stage import Stage, StageSummary
from pipeline.core.config import Config, Environment
from pipeline.core.errors import Interrupted, PipelineError, PolicyBlocked, UsageError
from pipeline.core.lock import EnvLock
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.reporter import Reporter
from pipeline.core.stage_registry import STAGE_REGISTRY, from_sources, with_attached, with_gates
from pipeline.core.vocab import StageStatus
from pipeline.release.provisioning import Provisioning
from pipeline.versioning.releaseinfo import ReleaseInfo, recorded_release_info, release_info


def _stage_class(name: str) -> Callable[[], Stage]:
    """The class of one stage, imported on use: a no-op `invoke build` does not pay for the signing, lint or
    scan modules (and their libraries)."""
    module, _, cls = STAGE_REGISTRY[name].target.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def make_stages(names: Sequence[str]) -> list[Stage]:
    """The Stage objects for these names, in the order given. UsageError for an unknown name."""
    unknown = [n for n in names if n not in STAGE_REGISTRY]
    if unknown:
        raise UsageError(f"unknown stage(s): {', '.join(unknown)}", f"use: {', '.join(STAGE_REGISTRY)}")
    return [_stage_class(n)() for n in names]


def new_run_id() -> str:
    """VEZA_RUN_ID (a CI job's name for the run, made label-safe), else `<UTC time>-<6 hex>`.

    The run id names the run directory and labels every engine object the run creates."""
    from pipeline.core.names import safe_run_id

    given = os.environ.get("VEZA_RUN_ID", "")
    return safe_run_id(given) if given else datetime.now(UTC).strftime("%Y%m%dt%H%M%S") + "-" + secrets.token_hex(3)


def open_manifest(cfg: Config, env: Environment, info: ReleaseInfo | None, *, create: bool,
                  fresh: bool = False) -> Manifest:
    """The environment's Release manifest (`<state_dir>/<env>/manifest.json`).

    create=True (a run that builds): continued when it records this release (same commit and tree), else a
    new one. create=False (push, smoke, deploy… alone): the recorded one whatever release it holds; UsageError
    when the environment has none yet.
    """
    path = manifest_path(cfg.state_dir, env.name)
    old = Manifest.load_or_none(path)
    if not create:
        if old is None:
            raise UsageError(f"environment {env.name} has no Release manifest yet ({path})",
                             f"run `invoke build --env {env.name}` first")
        return old
    assert info is not None, "a manifest is created for a release read from git"
    if old is not None and old.release_id == info.release_id(env.name) and not fresh:
        return old
    return Manifest.new(path, env=env.name, release_id=info.release_id(env.name), version=info.version)


@contextmanager
def open_run(cfg: Config, env: Environment, reporter: Reporter, *, services: Sequence[str] = (),
             options: RunOptions | None = None, creates_manifest: bool, fresh: bool = False,
             info: ReleaseInfo | None = None) -> Iterator[RunContext]:
    """Lock the environment, open its manifest and a run directory; yields the RunContext of one command."""
    for s in services:
        cfg.service(s)   # a bad --service is refused before anything runs
    if info is None and not creates_manifest:
        # Working from a recorded release: its facts come from the manifest, git is not read.
        recorded = open_manifest(cfg, env, None, create=False)
        info = recorded_release_info(recorded)
    info = info or release_info(cfg, env)
    run_id = new_run_id()
    run_dir = cfg.state_dir / env.name / "runs" / run_id
    with EnvLock(cfg.state_dir / "locks", env.name, info.release_id(env.name)):
        manifest = open_manifest(cfg, env, info, create=creates_manifest, fresh=fresh)
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest.set("run_id", run_id)
        reporter.run_opened(run_dir, run_id, env.name)   # events, logs, trace (pipeline.observe)
        status = "failed"
        try:
            yield RunContext(cfg=cfg, env=env, info=info, manifest=manifest, run_id=run_id, run_dir=run_dir,
                             reporter=reporter, services=list(services), options=options or RunOptions())
            status = "ok"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            reporter.run_closed(status)


def _recorded_ok(ctx: RunContext, name: str) -> bool:
    rec = ctx.manifest.stage(name)
    return rec is not None and rec.covers(ctx.selected())


def preflight(ctx: RunContext, stages: Sequence[Stage]) -> None:
    """Every stage's cheap checks, before any stage runs (a bad registry password fails before a build).
    Timed as the run's "preflight" phase (the report's timeline)."""
    t0, wall, status = time.monotonic(), time.time(), "failed"
    try:
        for stage in stages:
            if stage.skip(ctx) is None:
                stage.preflight(ctx)
        status = "ok"
    finally:
        ctx.state.phases.append(Phase("preflight", wall, time.monotonic() - t0, status))


def run_stages(ctx: RunContext, stages: Sequence[Stage], *, resume: bool = False) -> list[Outcome]:
    """Run the stages in order; the runner alone records `stages.<name>`.

    resume=True: a stage recorded ok for this release (covering the selected services) is not redone when its
    holds() says the world still matches; otherwise the reason is printed and the stage runs again.
    Raises the first stage's PipelineError (after recording it), Interrupted (exit 130) on Ctrl-C.
    """
    outcomes = ctx.state.outcomes   # the run's, kept when a stage raises (the report reads them)
    first = len(outcomes)
    skips = {stage.name: stage.skip(ctx) for stage in stages}   # decided once, for the thread and the loop
    applicable = [stage for stage in stages if not skips[stage.name]]
    provisioning = Provisioning(ctx, applicable).start()   # later stages' long preparation, in the background
    try:
        for stage in stages:
            _stage_step(ctx, stage, skips[stage.name], provisioning, outcomes, resume)
    finally:
        provisioning.close()
    return outcomes[first:]


def _stage_step(ctx: RunContext, stage: Stage, reason: str | None, provisioning: Provisioning,
                outcomes: list[Outcome], resume: bool) -> None:
    """One stage: skipped, resumed (holds), or run. A failed provisioning stops the run at this boundary, and
    the stage's own provisioning is awaited before anything looks at the world for it."""
    failed = provisioning.failed_stage()
    if failed is not None:
        _provision_failed(ctx, failed, provisioning)
    if reason:
        o = Outcome(stage.name, StageStatus.SKIPPED, detail=reason, started=time.time())
        ctx.reporter.stage_finished(stage.name, o.status, reason)
        _record(ctx, o)
        outcomes.append(o)
        return
    try:
        provisioning.wait(stage.name)
    except KeyboardInterrupt:
        _finish(ctx, Outcome(stage.name, StageStatus.INTERRUPTED, 0.0, "Ctrl-C while it was being provisioned",
                             130, time.time()))
        raise Interrupted(f"interrupted while provisioning {stage.name}", "rerun the same command: it resumes") \
            from None
    if stage.name in provisioning.errors:
        _provision_failed(ctx, stage.name, provisioning)
    if resume and _recorded_ok(ctx, stage.name):
        t0, wall = time.monotonic(), time.time()
        why = stage.holds(ctx)
        if why is None:
            o = Outcome(stage.name, StageStatus.RESUMED, time.monotonic() - t0,
                        "recorded earlier; checked: still holds", started=wall)
            ctx.reporter.stage_finished(stage.name, o.status, o.detail)
            outcomes.append(o)
            return
        if not stage.check_only:   # a check never resumes: that is no news
            ctx.reporter.info(f"{stage.name}: {why}")
    outcomes.append(_run_one(ctx, stage))


def _provision_failed(ctx: RunContext, name: str, provisioning: Provisioning) -> None:
    """Record stage `name` as failed by its provisioning (or interrupted) and raise, as _run_one does."""
    wall = time.time()
    try:
        provisioning.raise_failed(name)
    except KeyboardInterrupt:
        _finish(ctx, Outcome(name, StageStatus.INTERRUPTED, 0.0, "Ctrl-C during its provisioning", 130, wall))
        raise Interrupted(f"interrupted while provisioning {name}; its cleanup ran",
                          "rerun the same command: it resumes") from None
    except PipelineError as exc:
        _finish(ctx, Outcome(name, StageStatus.FAILED, 0.0, exc.one_line(), exc.exit_code, wall, dict(exc.record)))
        raise
    except Exception as exc:
        _finish(ctx, Outcome(name, StageStatus.FAILED, 0.0, f"{type(exc).__name__}: {exc}", 1, wall))
        raise


def _run_one(ctx: RunContext, stage: Stage) -> Outcome:
    ctx.reporter.stage_started(stage.name)
    t0, wall = time.monotonic(), time.time()
    try:
        summary = stage.run(ctx)
    except KeyboardInterrupt:
        o = Outcome(stage.name, StageStatus.INTERRUPTED, time.monotonic() - t0, "Ctrl-C", 130, wall)
        _finish(ctx, o)
        raise Interrupted(f"interrupted during {stage.name}; its cleanup ran",
                          "rerun the same command: it resumes") from None
    except PipelineError as exc:
        status = StageStatus.BLOCKED if isinstance(exc, PolicyBlocked) else StageStatus.FAILED
        if isinstance(exc, Interrupted):
            status = StageStatus.INTERRUPTED
        o = Outcome(stage.name, status, time.monotonic() - t0, exc.one_line(), exc.exit_code, wall, dict(exc.record))
        _finish(ctx, o)
        raise
    except Exception as exc:
        o = Outcome(stage.name, StageStatus.FAILED, time.monotonic() - t0, f"{type(exc).__name__}: {exc}", 1, wall)
        _finish(ctx, o)
        raise
    o = Outcome(stage.name, StageStatus.OK, time.monotonic() - t0, summary.detail, 0, wall, summary.fields,
                check_only=stage.check_only)
    _finish(ctx, o)
    return o


def _finish(ctx: RunContext, o: Outcome) -> None:
    ctx.reporter.stage_finished(o.name, o.status, o.detail)
    _record(ctx, o)
    if o not in ctx.state.outcomes and o.status != StageStatus.OK:
        ctx.state.outcomes.append(o)


def _record(ctx: RunContext, o: Outcome) -> None:
    rec: dict[str, Any] = {**o.fields, "status": str(o.status), "duration_s": round(o.duration_s, 2),
                           "run_id": ctx.run_id, "services": ctx.selected()}
    if o.detail:
        rec["detail" if o.status in (StageStatus.OK, StageStatus.SKIPPED) else "error"] = o.detail
    if o.exit_code:
        rec["exit_code"] = o.exit_code
    ctx.manifest.record_stage(o.name, rec)


def run_command(cfg: Config, env: Environment, stage_names: Sequence[str], reporter: Reporter, *,
                services: Sequence[str] = (), options: RunOptions | None = None) -> list[Outcome]:
    """`invoke build`, `invoke push`, … : the named stages, in order, on the environment's manifest, no resume.

    Each named stage brings the stages it is gated by that the environment lists (`invoke deploy` runs
    verify-images first) and those attached to it (push: the SBOM attachment): pipeline/core/stage_registry.py."""
    stages = make_stages(with_attached(with_gates(list(stage_names), env.stages), release=False))
    with open_run(cfg, env, reporter, services=services, options=options,
                  creates_manifest=from_sources(stage_names)) as ctx:
        preflight(ctx, stages)
        return run_stages(ctx, stages)


__all__ = ["Outcome", "StageSummary", "make_stages", "open_run", "preflight", "run_command", "run_stages"]
