"""Build stage: plan by input digest, reuse what has not changed, build the rest in parallel, record the manifest."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment, Service, load_config
from pipeline.core.errors import StageFailed, UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter, Reporter
from pipeline.stages.buildcontext import rules_for
from pipeline.stages.plan import BuildPlan, ServicePlan, base_build_args, input_record
from pipeline.stages.rebuild_reasons import InputCache, why_rebuilt
from pipeline.tools import buildkit, docker
from pipeline.tools.build_progress import BuildProgress
from pipeline.versioning.releaseinfo import ReleaseInfo, release_info

CACHE_REPO = "veza-pipeline-cache"


@dataclass(frozen=True)
class BuildResult:
    service: str
    status: str                   # built | reused | failed | skipped | cancelled
    image_id: str | None
    duration_s: float
    log: Path | None
    reason: str = ""
    why: str = ""                              # what changed since the image it would otherwise reuse
    cached_steps: tuple[str, ...] = ()         # Dockerfile steps the builder took from its cache


def default_workers(cfg: Config) -> int:
    return cfg.build.workers or max(1, min(4, os.cpu_count() or 2))


def resolve_bases(cfg: Config, services: tuple[Service, ...], *, provision: bool,
                  reporter: Reporter | None = None) -> tuple[dict[str, str], dict[str, bool]]:
    """Base refs → image IDs, preferring the upstream image when it is present, else the local equivalent.

    When neither reference exists and provision is true, `invoke bases` runs first (pull, or build from
    Debian packages).
    """
    names = sorted({b for s in services for b in s.bases})
    ids: dict[str, str] = {}
    use_local: dict[str, bool] = {}
    missing = []
    for n in names:
        base = cfg.bases[n]
        up = docker.image_id(base.upstream)
        loc = None if up else docker.image_id(base.local)
        if up or loc:
            ids[base.upstream if up else base.local] = str(up or loc)
            use_local[n] = not up
        else:
            missing.append(n)
    if missing and provision:
        from pipeline.local.bases import ensure_bases

        (reporter or PlainReporter()).info(f"base images missing ({', '.join(missing)}): "
                                           "providing them first (invoke bases)")
        ensure_bases(force=False, try_pull=True)
        return resolve_bases(cfg, services, provision=False, reporter=reporter)
    for n in missing:
        base = cfg.bases[n]
        ids[base.local] = "missing"
        use_local[n] = True
    return ids, use_local


def cache_ref(service: str, digest: str) -> str:
    """A local tag naming an image by its input digest: finding it is one inspect, not an image listing."""
    return f"{CACHE_REPO}/{service}:in-{digest.removeprefix('sha256:')[:32]}"


def find_by_input_digest(service: str, digest: str) -> str | None:
    """The local image built from exactly these inputs (its label must agree with the cache tag), or None."""
    found = docker.image_labels(cache_ref(service, digest))
    if found is None:
        return None
    image_id, labels = found
    return image_id if labels.get(docker.LABEL_INPUT_DIGEST) == digest else None


def input_cache(cfg: Config) -> InputCache:
    """The local cache of each service's last inputs (for "why rebuilt")."""
    return InputCache(cfg.state_dir / "inputs")


def make_plan(cfg: Config, env: Environment, selected: tuple[Service, ...], info: ReleaseInfo, *,
              no_cache: bool, provision_bases: bool, builder: buildkit.Builder | None = None,
              reporter: Reporter | None = None) -> BuildPlan:
    """Decide tags, input digests, actions and reasons before anything is built.

    The context file list follows the `.dockerignore` semantics of `builder` (detected from
    `[build].builder` when None). Engine queries: one inspect per base and per service.
    """
    builder = builder or buildkit.detect(cfg.build.builder)
    rules = rules_for(builder.kind)
    base_ids, use_local = resolve_bases(cfg, selected, provision=provision_bases, reporter=reporter)
    cache = input_cache(cfg)
    plans = []
    for svc in cfg.services:
        repo = env.repository(svc)
        args = {**base_build_args(cfg, svc, use_local), **info.build_args(cfg), **dict(svc.build_args)}
        svc_bases = {k: v for k, v in base_ids.items()
                     if any(k in (cfg.bases[b].upstream, cfg.bases[b].local) for b in svc.bases)}
        if svc not in selected:
            plans.append(ServicePlan(svc, repo, info.tags, "", args, "skip", "not selected (--service)"))
            continue
        record = input_record(svc, args, svc_bases, rules)
        digest = record.digest
        existing = None if no_cache else find_by_input_digest(svc.name, digest)
        why = "unchanged"
        if "missing" in svc_bases.values():
            action, reason, found = "build", "base image missing: `invoke bases` will provide it", None
        elif no_cache:
            action, reason, found = "build", "--no-cache", None
        elif existing:
            action, reason, found = "reuse", "same input digest as image " + existing[7:19], existing
        else:
            action, reason, found = "build", "no image with this input digest", None
        if action == "build":
            why = "--no-cache" if no_cache else why_rebuilt(cache.load(svc.name), record)
        plans.append(ServicePlan(svc, repo, info.tags, digest, args, action, reason, found, why, record))
    return BuildPlan(env=env, services=tuple(plans), version=info.version, builder=builder)


def print_plan(plan: BuildPlan, reporter: Reporter | None = None) -> None:
    """One line per service: "veza-backend-api: rebuild — main.go modified", and which builder runs."""
    rep = reporter or PlainReporter()
    if plan.builder is not None:
        rep.info(f"build plan ({plan.env.name}) — builder: {plan.builder.label} ({plan.builder.why})")
    for p in plan.services:
        tags = ", ".join(p.tags)
        if p.action == "build":
            rep.info(f"  {p.name}: rebuild — {p.why or p.reason} (input {p.input_digest[7:19]}; tags {tags})")
        elif p.action == "reuse":
            rep.info(f"  {p.name}: reuse — {p.reason} (tags {tags})")
        else:
            rep.info(f"  {p.name}: skip — {p.reason}")


def _labels(cfg: Config, p: ServicePlan, info: ReleaseInfo) -> dict[str, str]:
    """OCI labels the Dockerfile does not set itself (from the same build args), plus the pipeline's own.

    The legacy builder turns every --label into one more build step (a container commit each), so labels
    the Dockerfile already carries are not passed again: a rebuild stays close to a plain `docker build`.
    """
    oci = {
        "org.opencontainers.image.title": p.name,
        "org.opencontainers.image.source": cfg.source_url,
        "org.opencontainers.image.revision": info.revision,
        "org.opencontainers.image.version": info.version_label,
        "org.opencontainers.image.created": info.created,
    }
    dockerfile = p.service.dockerfile.read_text()
    # One pipeline label only: the service is named by the OCI title label and the cache tag.
    return {**{k: v for k, v in oci.items() if k not in dockerfile}, docker.LABEL_INPUT_DIGEST: p.input_digest}


def _build_one(cfg: Config, p: ServicePlan, info: ReleaseInfo, log_dir: Path, no_cache: bool,
               stop: threading.Event, builder: buildkit.Builder, reporter: Reporter) -> BuildResult:
    log = log_dir / f"{p.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    iid = log_dir / f"{p.name}.iid"
    iid.unlink(missing_ok=True)
    t0 = time.monotonic()
    progress = BuildProgress()
    reporter.step("build", p.name, f"starting ({p.why or p.reason})")
    with log.open("w") as fh:
        def on_line(line: str) -> None:
            fh.write(line + "\n")
            fh.flush()
            reporter.detail(f"{p.name}: {line}")
            # Each Dockerfile step's state changes are progress of the running build ("running"); the
            # service's own outcome is reported once below (done | failed), a reuse as "cached".
            for ev in progress.feed(line):
                if ev.state == "failed":
                    continue
                took = f" {ev.seconds:.1f}s" if ev.seconds is not None else ""
                note = {"running": "", "cached": " — cached", "done": f" — done{took}"}[ev.state]
                reporter.step("build", p.name, f"{ev.name}{note}", "running")

        rc = buildkit.build(
            builder, context=p.service.context, dockerfile=p.service.dockerfile, tags=p.refs,
            build_args=p.build_args, labels=_labels(cfg, p, info), no_cache=no_cache, on_line=on_line,
            timeout=cfg.build.timeout_s, iidfile=iid, stop=stop,
        )
    took = time.monotonic() - t0
    cached = tuple(progress.cached_steps())
    if stop.is_set() and rc != 0:
        return BuildResult(p.name, "cancelled", None, took, log, "stopped by --fail-fast", p.why, cached)
    if rc != 0 or not iid.exists():
        tail = progress.failure_tail()
        reporter.step("build", p.name, f"{builder.label} exited {rc}", "failed")
        for line in tail:
            reporter.warn(f"{p.name} | {line}")
        return BuildResult(p.name, "failed", None, took, log, f"docker build exited {rc}; log: {log}", p.why, cached)
    image_id = iid.read_text().strip()
    repo, tag = cache_ref(p.name, p.input_digest).rsplit(":", 1)
    docker.tag_image(image_id, repo, tag)
    reporter.step("build", p.name, f"built in {took:.1f}s ({len(cached)} step(s) from cache)", "done")
    return BuildResult(p.name, "built", image_id, took, log, "", p.why, cached)


def _record(m: Manifest, p: ServicePlan, r: BuildResult) -> None:
    m.set_service(p.name, repository=p.repository, tags=list(p.tags), input_digest=p.input_digest)
    res: dict[str, Any] = {"status": r.status, "image_id": r.image_id, "duration_s": round(r.duration_s, 2)}
    if r.log:
        res["log"] = str(r.log)
    if r.reason:
        res["reason"] = r.reason
    if r.why:
        res["why"] = r.why
    m.record(p.name, "build", res)


def open_manifest(cfg: Config, env: Environment, info: ReleaseInfo, path: Path | None = None) -> Manifest:
    """The manifest of this release (same env, same commit and tree): continued; otherwise a new one."""
    path = path or cfg.state_dir / "manifest.json"
    old = Manifest.load_or_none(path) if path.exists() else None
    if old is not None and old.release_id == info.release_id(env.name):
        return old
    return Manifest.new(path, env=env.name, release_id=info.release_id(env.name), version=info.version)


def execute_plan(cfg: Config, plan: BuildPlan, info: ReleaseInfo, manifest: Manifest, *, workers: int,
                 fail_fast: bool, no_cache: bool, log_dir: Path,
                 reporter: Reporter | None = None) -> list[BuildResult]:
    """Reuse (re-tag) what the plan reuses, build the rest in parallel with the plan's builder, record each.

    Each service's full builder output goes to `<log_dir>/<service>.log`; the reporter gets one step per
    Dockerfile step state change and, on a failure, the failing step's last lines. The inputs of every image
    built or reused are kept in the local input cache (for the next plan's "why rebuilt").
    """
    rep = reporter or PlainReporter()
    builder = plan.builder or buildkit.detect(cfg.build.builder)
    cache = input_cache(cfg)
    results: list[BuildResult] = []
    for p in plan.services:
        if p.action == "reuse" and p.existing_image:
            t0 = time.monotonic()
            for ref in p.refs:
                repo, tag = ref.rsplit(":", 1)
                docker.tag_image(p.existing_image, repo, tag)
            r = BuildResult(p.name, "reused", p.existing_image, time.monotonic() - t0, None, p.reason, "unchanged")
            rep.step("build", p.name, f"unchanged ({p.reason}); tagged {', '.join(p.tags)}", "cached")
            _record(manifest, p, r)
            if p.inputs is not None:
                cache.save(p.name, p.inputs)
            results.append(r)
    to_build = [p for p in plan.services if p.action == "build"]
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="build") as pool:
        futures: dict[Future[BuildResult], ServicePlan] = {
            pool.submit(_build_one, cfg, p, info, log_dir, no_cache, stop, builder, rep): p for p in to_build}
        if to_build:
            rep.info(f"building {len(to_build)} image(s) with {workers} worker(s), {builder.label}: "
                     f"{', '.join(p.name for p in to_build)}")
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    p = futures[f]
                    r = f.result() if not f.cancelled() else BuildResult(p.name, "cancelled", None, 0.0, None,
                                                                          "not started: --fail-fast", p.why)
                    results.append(r)
                    _record(manifest, p, r)
                    if r.status == "built" and p.inputs is not None:
                        cache.save(p.name, p.inputs)
                    if r.status == "failed" and fail_fast and not stop.is_set():
                        rep.warn(f"{p.name} failed: --fail-fast stops the other builds")
                        stop.set()
                        for other in pending:
                            other.cancel()
        except KeyboardInterrupt:
            stop.set()
            for other in pending:
                other.cancel()
            raise
    return results


def summarize(results: list[BuildResult], reporter: Reporter | None = None,
              builder: buildkit.Builder | None = None) -> None:
    """The build summary: one line per service (result, image, duration, why / log), and the builder."""
    rep = reporter or PlainReporter()
    if builder is not None:
        rep.info(f"build summary — builder: {builder.label} ({builder.why})")
    else:
        rep.info("build summary")
    for r in sorted(results, key=lambda r: r.service):
        image = (r.image_id or "-")[7:19]
        if r.status == "built":
            detail = f"rebuilt: {r.why}; {len(r.cached_steps)} step(s) from cache; log {r.log}"
        elif r.status == "reused":
            detail = r.reason
        else:
            detail = r.reason or (str(r.log) if r.log else "")
        rep.info(f"  {r.service}: {r.status} {image} {r.duration_s:.1f}s — {detail}")


def run_build(services: list[str], env_name: str, no_cache: bool = False, workers: int = 0,
              fail_fast: bool = False, dry_run: bool = False, cfg: Config | None = None,
              reporter: Reporter | None = None) -> list[BuildResult]:
    """`invoke build`: the whole build stage; raises StageFailed (exit 1) when any build failed."""
    cfg = cfg or load_config()
    rep = reporter or PlainReporter()
    env = cfg.env(env_name)
    selected = cfg.select(services)
    if workers < 0:
        raise UsageError(f"--workers {workers} is negative", "give 0 (auto) or a positive number")
    info = release_info(cfg, env)
    plan = make_plan(cfg, env, selected, info, no_cache=no_cache, provision_bases=not dry_run, reporter=rep)
    print_plan(plan, rep)
    if dry_run:
        rep.info("dry run: nothing built")
        return []
    manifest = open_manifest(cfg, env, info)
    log_dir = cfg.state_dir / "logs" / "build"
    t0 = time.monotonic()
    results = execute_plan(cfg, plan, info, manifest, workers=workers or default_workers(cfg),
                           fail_fast=fail_fast, no_cache=no_cache, log_dir=log_dir, reporter=rep)
    failed = [r for r in results if r.status in ("failed", "cancelled")]
    builder = plan.builder
    manifest.record_stage("build", {"status": "failed" if failed else "ok",
                                    "duration_s": round(time.monotonic() - t0, 2),
                                    **({"builder": builder.kind} if builder else {})})
    summarize(results, rep, builder)
    if failed:
        names = ", ".join(r.service for r in failed if r.status == "failed")
        raise StageFailed(f"build failed for {names}; logs under {log_dir}",
                          "read the log, fix the Dockerfile or sources, rerun `invoke build` (built images are kept)")
    return results
