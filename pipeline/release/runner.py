"""`invoke release --env ENV`: the stages the environment requires, resumable, locked, reported.

Every stage is a small object with a name and run(ctx) (GoReleaser's pipes); a stage that does not apply
raises Skip(reason) and the runner says why. One ReleaseContext carries the config, the environment,
the release facts and the Release manifest, which every stage extends and which makes a rerun resume.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment, load_config
from pipeline.core.console import console, table
from pipeline.core.errors import Interrupted, PipelineError, StageFailed, UsageError
from pipeline.core.lock import EnvLock
from pipeline.core.manifest import Manifest
from pipeline.release.report import write_report
from pipeline.stages.build import default_workers, execute_plan, make_plan, open_manifest, print_plan, summarize
from pipeline.versioning.releaseinfo import ReleaseInfo, release_info


class Skip(Exception):
    """A stage that does not apply to this run; the reason is printed and recorded."""


@dataclass
class ReleaseContext:
    cfg: Config
    env: Environment
    services: list[str]
    info: ReleaseInfo
    manifest: Manifest
    run_id: str
    run_dir: Path
    fresh: bool
    timings: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def say(self, msg: str) -> None:
        console.print(msg, highlight=False, markup=False)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[ReleaseContext], None]
    resumable: bool = True   # a stage recorded "ok" for this release is not redone


# ---------------------------------------------------------------- the stages

def _build(ctx: ReleaseContext) -> None:
    selected = ctx.cfg.select(ctx.services)
    plan = make_plan(ctx.cfg, ctx.env, selected, ctx.info, no_cache=False, provision_bases=True)
    print_plan(plan)
    results = execute_plan(ctx.cfg, plan, ctx.info, ctx.manifest, workers=default_workers(ctx.cfg),
                           fail_fast=False, no_cache=False, log_dir=ctx.run_dir / "build")
    summarize(results)
    failed = [r.service for r in results if r.status not in ("built", "reused")]
    if failed:
        raise StageFailed(f"build failed for {', '.join(failed)}; logs under {ctx.run_dir / 'build'}",
                          "fix the build, then rerun the same release: it resumes")


def _scan(ctx: ReleaseContext) -> None:
    from pipeline.stages.scan import run_scan

    run_scan(ctx.services or None, ctx.env.name, config=ctx.cfg, manifest=ctx.manifest, log=ctx.say)


def _smoke(ctx: ReleaseContext) -> None:
    from pipeline.stages.smoke import smoke_release

    # Same knob as `invoke smoke`: extra compose override files (e.g. to reproduce a failure).
    overrides = [Path(p) for p in os.environ.get("VEZA_SMOKE_OVERRIDES", "").split(os.pathsep) if p]
    smoke_release(ctx.cfg, ctx.env, ctx.manifest, ctx.run_dir / "smoke", False, overrides=overrides, echo=ctx.say)


def _push(ctx: ReleaseContext) -> None:
    from pipeline.stages.push import run_push

    run_push(ctx.services or None, ctx.env.name, config=ctx.cfg, manifest=ctx.manifest, log=ctx.say)
    if "scan" in ctx.env.stages:
        from pipeline.stages.sbom import attach_sboms

        try:  # the SBOM beside the image in the registry is a plus: its failure does not fail the release
            attach_sboms(ctx.services or None, ctx.env.name, config=ctx.cfg, manifest=ctx.manifest, log=ctx.say)
        except PipelineError as exc:
            ctx.say(f"warning: SBOMs not attached: {exc.one_line()}")


def _deploy(ctx: ReleaseContext) -> None:
    from pipeline.stages.deploy import deploy_release

    deploy_release(ctx.cfg, ctx.env, ctx.manifest, ctx.services)


def _verify(ctx: ReleaseContext) -> None:
    from pipeline.stages.deploy import verify_release

    verify_release(ctx.cfg, ctx.env, ctx.manifest, ctx.services)


STAGES: dict[str, Stage] = {
    "build": Stage("build", _build, resumable=True),
    "scan": Stage("scan", _scan),
    "smoke": Stage("smoke", _smoke),
    "push": Stage("push", _push),
    "deploy": Stage("deploy", _deploy),
    "verify": Stage("verify", _verify, resumable=False),  # always re-verified: it is cheap and read-only
}


# ---------------------------------------------------------------- pre-flight, plan, confirmation

def check_gates(env: Environment, info: ReleaseInfo) -> None:
    """Refuse before anything runs when the environment's git policy is not met (exit 2)."""
    if env.require_clean_tree or env.require_release_tag:
        from pipeline.versioning.guards import require_release_ready

        require_release_ready(info.source, env)


def preflight(ctx: ReleaseContext) -> None:
    """Fail fast, before any build: the registry accepts our writes, the cluster answers."""
    if "push" in ctx.env.stages:
        from pipeline.local.registry import ensure_local_registry
        from pipeline.stages.push import check_registry_writable

        if ctx.env.registry.startswith(("127.0.0.1:", "localhost:")):
            ensure_local_registry(ctx.env.registry)
        check_registry_writable(ctx.env, config=ctx.cfg, services=ctx.services or None)
        ctx.say(f"pre-flight: registry {ctx.env.registry} accepts pushes")
    if "scan" in ctx.env.stages:
        ensure_db_mirror(ctx.cfg, ctx.say)
    if "deploy" in ctx.env.stages:
        from pipeline.local.cluster import cluster_up

        cluster_up(env_name=ctx.env.name)


def ensure_db_mirror(cfg: Config, say: Callable[[str], None]) -> None:
    """An empty embedded DB mirror (local registry) is seeded from [scan].mirror_seed; any other is left alone."""
    repo = cfg.scan.db_repository
    if not repo or cfg.scan.mirror_seed is None or not repo.startswith(("127.0.0.1:", "localhost:")):
        return
    from pipeline.local.registry import ensure_local_registry
    from pipeline.tools.registry_api import RegistryClient, split_repository

    address, path = split_repository(repo)
    ensure_local_registry(address)
    if RegistryClient(address, timeout=10).head_manifest(path, "2") is not None:
        return
    from pipeline.local.trivydb import make_mirror

    say(f"pre-flight: the Trivy DB mirror {repo} is empty; seeding it from {cfg.scan.mirror_seed.name}")
    make_mirror(cfg.scan.mirror_seed, push=repo)


def print_release_plan(cfg: Config, env: Environment, info: ReleaseInfo, services: list[str],
                       manifest: Manifest | None) -> None:
    v = info.version
    console.print(f"[bold]release plan[/]: env [bold]{env.name}[/], version {v.get('version')}, "
                  f"commit {v.get('short_sha')}{' (dirty)' if v.get('dirty') else ''}, "
                  f"branch {v.get('branch') or 'detached'}, tags {', '.join(info.tags)}")
    done = {k for k, s in (manifest.data["stages"] if manifest else {}).items() if s.get("status") == "ok"}
    console.print(f"stages: {' → '.join(s + (' (done, resumes after)' if s in done else '') for s in env.stages)}")
    console.print(f"gates: scan blocks at {env.scan_threshold} and above"
                  f"{', unfixed ignored' if env.ignore_unfixed else ''}; clean tree "
                  f"{'required' if env.require_clean_tree else 'not required'}; release tag "
                  f"{'required' if env.require_release_tag else 'not required'}; confirmation "
                  f"{'asked' if env.confirm else 'not asked'}")
    selected = cfg.select(services)
    plan = make_plan(cfg, env, selected, info, no_cache=False, provision_bases=False)
    print_plan(plan)
    t = table("targets", "service", "registry repository", "helm image value")
    for p in plan.services:
        if p.action == "skip":
            continue
        pushed = (manifest.stage_result(p.name, "push") if manifest and p.name in manifest.services() else None) or {}
        digest = pushed.get("digest") if pushed.get("status") in ("pushed", "skipped") else None
        t.add_row(p.name, p.repository, f"{p.repository}@{digest}" if digest else f"{p.repository}@<digest after push>")
    console.print(t)
    if "deploy" in env.stages:
        ctx = env.kube_context or "the local cluster (invoke cluster-up)"
        console.print(f"helm: upgrade --install {env.helm_release} helm/veza --namespace {env.namespace} "
                      f"--kube-context {ctx} -f helm/veza/values.yaml -f {env.values_file.relative_to(cfg.root)} "
                      f"--set <service>.image.repository/digest (above) --wait, rollback on failure")


def confirm(env: Environment, info: ReleaseInfo, yes: bool) -> None:
    if not env.confirm or yes or os.environ.get("CI", "").lower() == "true":
        return
    if not sys.stdin.isatty():
        raise UsageError(f"releasing to {env.name} needs confirmation and there is no terminal to ask",
                         "pass --yes (or set CI=true in CI)")
    answer = input(f"Release {info.version.get('version')} ({info.release_key}) to {env.name}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("release not confirmed", "answer y, or pass --yes")


# ---------------------------------------------------------------- the runner

def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dt%H%M%S") + "-" + secrets.token_hex(3)


def _stage_done(m: Manifest, stage: str, services: list[str]) -> bool:
    rec = m.data["stages"].get(stage) or {}
    if rec.get("status") != "ok":
        return False
    covered = set(rec.get("services") or [])
    return not services or set(services) <= covered


def run_stages(ctx: ReleaseContext) -> None:
    names = [s.name for s in ctx.cfg.select(ctx.services)]
    for name in ctx.env.stages:
        stage = STAGES[name]
        if stage.resumable and not ctx.fresh and _stage_done(ctx.manifest, name, names):
            ctx.say(f"── {name}: done in an earlier run of this release; not redone")
            ctx.outcomes[name] = {"status": "resumed", "duration_s": 0.0}
            continue
        console.rule(f"{name}")
        t0 = time.monotonic()
        try:
            stage.run(ctx)
        except Skip as skip:
            ctx.outcomes[name] = {"status": "skipped", "reason": str(skip), "duration_s": time.monotonic() - t0}
            ctx.say(f"── {name}: skipped ({skip})")
            continue
        except KeyboardInterrupt:
            _finish(ctx, name, t0, "interrupted", "Ctrl-C")
            raise Interrupted(f"release interrupted during {name}; its cleanup ran",
                              "rerun the same command: the release resumes") from None
        except PipelineError as exc:
            _finish(ctx, name, t0, "failed", exc.one_line(), exit_code=exc.exit_code)
            raise
        except Exception as exc:
            _finish(ctx, name, t0, "failed", f"{type(exc).__name__}: {exc}", exit_code=1)
            raise
        _finish(ctx, name, t0, "ok", "")


def _finish(ctx: ReleaseContext, name: str, t0: float, status: str, error: str, exit_code: int = 0) -> None:
    took = round(time.monotonic() - t0, 2)
    rec: dict[str, Any] = {"status": status, "duration_s": took, "run_id": ctx.run_id,
                           "services": [s.name for s in ctx.cfg.select(ctx.services)]}
    if error:
        rec["error"] = error
        rec["exit_code"] = exit_code
    ctx.manifest.record_stage(name, rec)
    ctx.outcomes[name] = rec


def run_release(env_name: str, services: list[str] | None = None, dry_run: bool = False, yes: bool = False,
                fresh: bool = False, cfg: Config | None = None) -> ReleaseContext | None:
    t_start = time.monotonic()
    cfg = cfg or load_config()
    env = cfg.env(env_name)
    names = [s.name for s in cfg.select(services)] if services else []
    info = release_info(cfg, env)
    manifest_path = cfg.state_dir / "manifest.json"
    old = Manifest.load_or_none(manifest_path)
    resumable = old if old is not None and old.release_id == info.release_id(env.name) and not fresh else None
    if dry_run:
        print_release_plan(cfg, env, info, names, resumable)
        check_gates(env, info)
        console.print("dry run: nothing built, pushed or deployed")
        return None
    check_gates(env, info)
    confirm(env, info, yes)
    run_id = new_run_id()
    run_dir = cfg.state_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    with EnvLock(cfg.state_dir / "locks", env.name, info.release_id(env.name)):
        if fresh or resumable is None:
            manifest = Manifest.new(manifest_path, env=env.name, release_id=info.release_id(env.name),
                                    version=info.version)
        else:
            manifest = open_manifest(cfg, env, info, manifest_path)
            console.print(f"resuming release {manifest.release_id} (use --fresh to start over)")
        manifest.set("run_id", run_id)
        ctx = ReleaseContext(cfg, env, names, info, manifest, run_id, run_dir, fresh)
        console.print(f"[bold]release {manifest.release_id}[/] → {env.name}: {' → '.join(env.stages)} "
                      f"(run {run_id})")
        status, error = "ok", ""
        try:
            preflight(ctx)
            run_stages(ctx)
        except PipelineError as exc:
            status, error = "failed", exc.one_line()
            raise
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            paths = write_report(ctx, status=status, error=error, duration_s=time.monotonic() - t_start)
            print_summary(ctx, status, paths)
        return ctx


def print_summary(ctx: ReleaseContext, status: str, paths: tuple[Path, Path]) -> None:
    t = table(f"release {ctx.manifest.release_id} → {ctx.env.name}: {status}", "stage", "result", "duration",
              "detail")
    for name in ctx.env.stages:
        o = ctx.outcomes.get(name, {"status": "not run"})
        t.add_row(name, o["status"], f"{o.get('duration_s', 0):.1f}s", str(o.get("error") or o.get("reason") or ""))
    console.print(t)
    console.print(f"report: {paths[0]} and {paths[1]}")
