"""`invoke release --env ENV`: the environment's stages through the runner, gated, confirmed, resumable, reported.

Resume means verified: a stage recorded ok for this release (same commit and tree) is skipped only when its
holds() confirms, in the registry, the engine or the cluster, that its result is still there.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pipeline.contract.context import Outcome, RunContext
from pipeline.contract.options import RunOptions
from pipeline.core.config import Config, Environment
from pipeline.core.errors import PipelineError, UsageError
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.reporter import Reporter
from pipeline.core.stage_registry import with_attached
from pipeline.release.report import shown_stages, write_report
from pipeline.release.runner import make_stages, open_run, preflight, run_stages
from pipeline.tools.registry_clients import RegistryClients
from pipeline.versioning.releaseinfo import ReleaseInfo, release_info


def check_gates(env: Environment, info: ReleaseInfo) -> None:
    """Refuse before anything runs when the environment's git policy is not met (exit 2)."""
    if env.require_clean_tree or env.require_release_tag:
        from pipeline.versioning.guards import require_release_ready

        require_release_ready(info.source, env)


def confirm(env: Environment, info: ReleaseInfo, yes: bool) -> None:
    """Ask before a release to an environment with `confirm = true`; CI=true or --yes skip the question."""
    if not env.confirm or yes or os.environ.get("CI", "").lower() == "true":
        return
    if not sys.stdin.isatty():
        raise UsageError(f"releasing to {env.name} needs confirmation and there is no terminal to ask",
                         "pass --yes (or set CI=true in CI)")
    answer = input(f"Release {info.version.get('version')} ({info.release_key}) to {env.name}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("release not confirmed", "answer y, or pass --yes")


def print_release_plan(cfg: Config, env: Environment, info: ReleaseInfo, services: list[str],
                       manifest: Manifest | None, reporter: Reporter) -> None:
    """`invoke release --dry-run`: version, stages (what a rerun would resume), gates, images and Helm call."""
    from pipeline.stages.build import make_plan, print_plan

    v = info.version
    reporter.info(f"release plan: env {env.name}, version {v.get('version')}, commit {v.get('short_sha')}"
                  f"{' (dirty)' if v.get('dirty') else ''}, branch {v.get('branch') or 'detached'}, "
                  f"tags {', '.join(info.tags)}")
    done = {k for k, s in (manifest.stages() if manifest else {}).items() if s.ok}
    reporter.info("stages: " + " → ".join(s + (" (recorded; resumes after checking it holds)" if s in done else "")
                                          for s in env.stages))
    reporter.info(f"gates: scan blocks at {env.scan_threshold} and above"
                  f"{', unfixed ignored' if env.ignore_unfixed else ''}; clean tree "
                  f"{'required' if env.require_clean_tree else 'not required'}; release tag "
                  f"{'required' if env.require_release_tag else 'not required'}; confirmation "
                  f"{'asked' if env.confirm else 'not asked'}")
    plan = make_plan(cfg, env, cfg.select(services), info, no_cache=False, provision_bases=False,
                     registries=RegistryClients(cfg))
    print_plan(plan, reporter)
    rows = []
    for p in plan.services:
        if p.action == "skip":
            continue
        pushed = manifest.pushed(p.name) if manifest else None
        ref = pushed.ref if pushed and pushed.ok else f"{p.repository}@<digest after push>"
        rows.append((p.name, p.repository, ref))
    reporter.table("targets", ("service", "registry repository", "helm image value"), rows)
    if "deploy" in env.stages:
        from pipeline.core.kubeconfig import resolve_cluster
        from pipeline.local.cluster import layout

        where = resolve_cluster(env, layout.KUBECONFIG).describe()
        reporter.info(f"helm: upgrade --install {env.helm_release} helm/veza --namespace {env.namespace} "
                      f"on {where} -f helm/veza/values.yaml -f {env.values_file.relative_to(cfg.root)} "
                      f"--set <service>.image.repository/digest (above) --wait, rollback on failure")


def run_release(cfg: Config, env: Environment, reporter: Reporter, *, services: list[str] | None = None,
                dry_run: bool = False, yes: bool = False, fresh: bool = False,
                options: RunOptions | None = None) -> RunContext | None:
    """The whole release to `env`: gates, confirmation, the env's lock, preflight of every stage, the stages
    (resuming what holds) with those attached to them and those closing a release (the published-image
    re-check; pipeline/core/stage_registry.py), the JSON/Markdown report. Raises the failing stage's
    PipelineError."""
    t_start = time.monotonic()
    names = [s.name for s in cfg.select(services)] if services else []
    info = release_info(cfg, env)
    if dry_run:
        old = Manifest.load_or_none(manifest_path(cfg.state_dir, env.name))
        resumable = old if old is not None and old.release_id == info.release_id(env.name) else None
        print_release_plan(cfg, env, info, names, resumable, reporter)
        check_gates(env, info)
        reporter.info("dry run: nothing built, pushed or deployed")
        return None
    check_gates(env, info)
    confirm(env, info, yes)
    stages = make_stages(with_attached(env.stages, release=True))
    with open_run(cfg, env, reporter, services=names, options=options, creates_manifest=True, fresh=fresh,
                  info=info) as ctx:
        resumed = bool(ctx.manifest.stages()) and not fresh
        reporter.info(f"release {ctx.manifest.release_id} → {env.name}: {' → '.join(env.stages)} (run {ctx.run_id})"
                      + ("; resuming: recorded stages are checked against the world" if resumed else ""))
        status, error = "ok", ""
        try:
            preflight(ctx, stages)
            run_stages(ctx, stages, resume=not fresh)
        except PipelineError as exc:
            status, error = "failed", exc.one_line()
            raise
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            outcomes = ctx.state.outcomes
            took = time.monotonic() - t_start
            paths = write_report(ctx, outcomes, status=status, error=error, duration_s=took)
            print_summary(ctx, outcomes, status, paths)
            push_metrics(ctx, outcomes, status, took)
        return ctx


def push_metrics(ctx: RunContext, outcomes: list[Outcome], status: str, duration_s: float) -> None:
    """Stage durations, cache hits and retries to the Pushgateway named by VEZA_PUSHGATEWAY_URL (if any);
    a failed push is a warning."""
    from pipeline.observe.metrics import StageTiming, push_run_metrics, pushgateway_url, run_registry
    from pipeline.observe.recorder import read_events
    from pipeline.release.html_report import cache_hits

    url = pushgateway_url()
    if not url:
        return
    retries = sum(p.retries for n in ctx.manifest.services() if (p := ctx.manifest.pushed(n)) is not None)
    reg = run_registry(ctx.run_id, status, duration_s,
                       [StageTiming(o.name, str(o.status), o.duration_s) for o in outcomes],
                       cache_hits=cache_hits(read_events(ctx.run_dir)), retries=retries)
    error = push_run_metrics(url, ctx.env.name, reg)
    if error:
        ctx.reporter.warn(error)
    else:
        ctx.reporter.detail(f"metrics pushed to {url}")


def print_summary(ctx: RunContext, outcomes: list[Outcome], status: str, paths: tuple[Path, ...]) -> None:
    """The closing lines: a table of the stages, or one line when nothing had to be redone (every stage resumed
    or skipped, or a check stage that verified again: verify-images, verify)."""
    by_name = {o.name: o for o in outcomes}
    if status == "ok" and by_name and all(o.status in ("resumed", "skipped") or (o.check_only and o.status == "ok")
                                          for o in by_name.values()):
        took = sum(o.duration_s for o in outcomes)
        listed = [o for o in outcomes if o.name in ctx.env.stages]   # as the table would show them
        checks = [o.name for o in listed if o.check_only]
        ctx.reporter.info(f"release {ctx.manifest.release_id} → {ctx.env.name}: ok, nothing to redo "
                          f"({len(listed)} stage(s) checked against the world in {took:.1f}s"
                          + (f"; {', '.join(checks)} verified again" if checks else "") + ")")
        ctx.reporter.info(f"report: {paths[-1]}")
        return
    rows = []
    for name in shown_stages(ctx, outcomes):
        o = by_name.get(name)
        rows.append((name, str(o.status), f"{o.duration_s:.1f}s", o.detail) if o else (name, "not run", "", ""))
    ctx.reporter.table(f"release {ctx.manifest.release_id} → {ctx.env.name}: {status}",
                       ("stage", "result", "duration", "detail"), rows)
    ctx.reporter.info(f"report: {paths[-1]} (also .json, .md)")
