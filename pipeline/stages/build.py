"""Build stage: plan by input digest, reuse what has not changed, build the rest in parallel, record the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.config import Config, Environment, Service
from pipeline.core.errors import StageFailed
from pipeline.core.manifest import Manifest
from pipeline.core.platforms import Platform, native_platform, primary_platform
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import LABEL_BUILD, LABEL_INPUT_DIGEST, BuildStatus, now_iso
from pipeline.stages.build_platforms import (
    cache_ref,
    check_builder,
    children_present,
    find_with_tags,
    local_children,
    service_platforms,
    tag_child,
)
from pipeline.stages.buildcontext import rules_for
from pipeline.stages.plan import BuildPlan, InputRecord, ServicePlan, base_build_args, input_record
from pipeline.stages.rebuild_reasons import InputCache, why_rebuilt
from pipeline.stages.registry_reuse import Lookup, ReuseSource, decide, find_reusable, registry_holds, reuse_sources
from pipeline.tools import buildkit, docker
from pipeline.tools.build_progress import BuildProgress
from pipeline.tools.registry_clients import RegistryClients
from pipeline.versioning.releaseinfo import ReleaseInfo, release_info


@dataclass(frozen=True)
class BuildResult:
    service: str
    status: BuildStatus
    image_id: str | None
    duration_s: float
    log: Path | None
    reason: str = ""
    why: str = ""                              # what changed since the image it would otherwise reuse
    cached_steps: tuple[str, ...] = ()         # Dockerfile steps the builder took from its cache
    platform_images: Mapping[str, str] = field(default_factory=dict)   # platform → image ID (multi-platform)
    origin: Mapping[str, str] = field(default_factory=dict)   # the build that made the image (Built.origin's keys)
    reuse: Mapping[str, str] = field(default_factory=dict)    # reused: this run (run_id, commit, at)


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
        from pipeline.core.progress import reporter_progress
        from pipeline.local.bases import ensure_bases

        say = reporter.info if reporter else print
        say(f"base images missing ({', '.join(missing)}): providing them first (invoke bases)")
        ensure_bases(force=False, try_pull=True, config=cfg, say=say,
                     progress=reporter_progress(reporter, "bases") if reporter else None)
        return resolve_bases(cfg, services, provision=False)
    for n in missing:
        base = cfg.bases[n]
        ids[base.local] = "missing"
        use_local[n] = True
    return ids, use_local


def input_cache(cfg: Config) -> InputCache:
    """The local cache of each service's last inputs (for "why rebuilt")."""
    return InputCache(cfg.state_dir / "inputs")


def make_plan(cfg: Config, env: Environment, selected: tuple[Service, ...], info: ReleaseInfo, *,
              no_cache: bool, provision_bases: bool, reporter: Reporter | None = None,
              builder: buildkit.Builder | None = None, registries: RegistryClients | None = None) -> BuildPlan:
    """Decide tags, input digests, actions and reasons before anything is built.

    The context file list follows the `.dockerignore` semantics of `builder` (detected from
    `[build].builder` when None). Engine queries: one inspect per base and per service. With `registries`, a
    single-platform service the engine has no image for is looked up in the environment's registry by its
    input digest, then in its `reuse_from` environments' (pipeline/stages/registry_reuse.py: one ping per
    registry, two GETs per repository asked, and the signature and provenance reads of an image found in another
    environment's); found (and vouched for), it is reused from there (nothing built, nothing pulled). The
    decision: registry_reuse.decide.
    """
    builder = builder or buildkit.detect(cfg.build.builder)
    rules = rules_for(builder.kind)
    native = native_platform()
    for svc in selected:
        check_builder(svc, env, *service_platforms(svc, env, native), builder, native)
    base_ids, use_local = resolve_bases(cfg, selected, provision=provision_bases, reporter=reporter)
    cache = input_cache(cfg)
    unanswered: dict[str, str | None] = {}   # registry address → why it did not answer (None: it answers)
    sources: list[ReuseSource] = []          # env, then its reuse_from environments (read on the first lookup)
    plans = []
    for svc in cfg.services:
        repo = env.repository(svc)
        args = {**base_build_args(cfg, svc, use_local), **info.build_args(cfg), **dict(svc.build_args)}
        svc_bases = {k: v for k, v in base_ids.items()
                     if any(k in (cfg.bases[b].upstream, cfg.bases[b].local) for b in svc.bases)}
        if svc not in selected:
            plans.append(ServicePlan(svc, repo, info.tags, "", args, "skip", "not selected (--service)"))
            continue
        plats, plats_from = service_platforms(svc, env, native)
        record = input_record(svc, args, svc_bases, rules, plats)
        digest = record.digest
        children: Mapping[str, str] = {}
        existing_tags: tuple[str, ...] = ()
        if plats:
            children = ({} if no_cache else local_children(svc.name, digest, plats, native)) or {}
            existing = children.get(str(primary_platform(plats, native)))
        else:
            found_image = None if no_cache else find_with_tags(svc.name, digest)
            existing, existing_tags = found_image or (None, ())
        base_missing = "missing" in svc_bases.values()
        found_remote: Lookup | None = None
        if registries is not None and not (existing or no_cache or base_missing or plats):
            sources = sources or reuse_sources(cfg, env)
            found_remote = find_reusable(registries, sources, svc, digest, unanswered)
        decision = decide(input_digest=digest, base_missing=base_missing, no_cache=no_cache, local_image=existing,
                          registry=found_remote)
        remote = found_remote.image if found_remote is not None and decision.source == "registry" else None
        found = existing if decision.source == "engine" else None
        why = "unchanged"
        if decision.action == "build":
            why = "--no-cache" if no_cache else why_rebuilt(cache.load(svc.name), record)
        plans.append(ServicePlan(svc, repo, info.tags, digest, args, decision.action, decision.reason, found, why,
                                 record, svc_bases, plats, plats_from, children if found else {},
                                 existing_tags if found else (), remote,
                                 found_remote.note if found_remote is not None and remote is None else ""))
    return BuildPlan(env=env, services=tuple(plans), version=info.version, builder=builder)


def print_plan(plan: BuildPlan, reporter: Reporter) -> None:
    """The plan: which builder runs and why, then per service its tags, input digest, action and why
    ("rebuild" — "main.go modified")."""
    if plan.builder is not None:
        reporter.info(f"builder: {plan.builder.label} ({plan.builder.why})")
    action = {"build": "rebuild", "reuse": "reuse", "skip": "skip"}
    reporter.table(f"build plan ({plan.env.name})", ("service", "tags", "input digest", "action", "why"),
                   [(p.name, ", ".join(p.tags), p.input_digest[7:19] if p.input_digest else "-", action[p.action],
                     _build_why(p) if p.action == "build" else p.reason) for p in plan.services])
    for line in platform_lines(plan):
        reporter.info(line)


def _build_why(p: ServicePlan) -> str:
    """A build row's why: what changed, and what the registry said when it was asked."""
    why = p.why or p.reason
    return f"{why}; {p.registry_note}" if p.registry_note else why


def platform_lines(plan: BuildPlan) -> list[str]:
    """One line per service when any service or the environment asks for platforms other than the
    machine's alone ("veza-chat-server: linux/amd64 only (services.veza-chat-server.platforms)"); [] else."""
    if not plan.env.platforms and not any(p.service.platforms for p in plan.services):
        return []
    out = []
    for p in plan.services:
        if p.action == "skip":
            continue
        where = {"service": f"services.{p.name}.platforms", "environment": f"environments.{plan.env.name}.platforms",
                 "native": "this machine's platform"}[p.platforms_from]
        effective = p.platforms or (native_platform(),)
        plats = ", ".join(map(str, effective))
        only = " only" if len(effective) == 1 else ""
        missing = [str(x) for x in plan.env.platforms if x not in effective] if p.platforms_from == "service" else []
        note = f"; not built for {', '.join(missing)}" if missing else ""
        out.append(f"platforms: {p.name}: {plats}{only} ({where}){note}")
    return out


def build_stamp(info: ReleaseInfo, run_id: str, started_on: str, builder: buildkit.Builder,
                engine_version: str) -> dict[str, str]:
    """The build's facts known before it runs, as the `LABEL_BUILD` label carries them (JSON object of strings:
    commit, dirty ("true" | "false": the tree had uncommitted changes), run, started (RFC 3339 UTC), builder
    (buildx | buildkit | legacy), builder_version (docker CLI), engine (the engine's version))."""
    dirty = "true" if info.version.get("dirty") else "false"
    return {"commit": info.revision, "dirty": dirty, "run": run_id, "started": started_on, "builder": builder.kind,
            "builder_version": builder.version, "engine": engine_version}


def origin_from_image(inspect: Mapping[str, Any] | None) -> dict[str, str]:
    """The build record's `origin` (Built.origin's keys) of a local image, from its `LABEL_BUILD` label and its
    creation time (the engine's inspect: `Created`, cut to seconds), or {} when the image carries no such label
    (built before the label existed).

    finished_on is the image's creation time: the builder writes it as it commits the image, at the end of the
    build (no build arg sets SOURCE_DATE_EPOCH here).
    """
    labels = ((inspect or {}).get("Config") or {}).get("Labels") or {}
    try:
        stamp = json.loads(labels.get(LABEL_BUILD) or "{}")
    except ValueError:
        return {}
    if not isinstance(stamp, dict) or not stamp.get("commit"):
        return {}
    created = str((inspect or {}).get("Created") or "")
    return origin_of(stamp, created[:19] + "Z" if len(created) >= 19 else "")


def origin_of(stamp: Mapping[str, Any], finished_on: str) -> dict[str, str]:
    """The build record's `origin` (Built.origin's keys) from a `build_stamp` (or the label that carries one)
    and the build's finish time (RFC 3339 UTC, "" when unknown)."""
    def text(key: str, default: str = "") -> str:
        return str(stamp.get(key) or default)

    return {"commit": text("commit"), "dirty": text("dirty", "false"), "run_id": text("run"),
            "started_on": text("started"), "finished_on": finished_on, "builder": text("builder"),
            "builder_version": text("builder_version"), "engine_version": text("engine")}


def _engine_version() -> str:
    """The Docker engine's version ("" when it does not say): recorded as the builder's component."""
    try:
        return str(docker.client().version().get("Version") or "")
    except Exception:   # the build itself reports an absent engine; provenance then says "unknown"
        return ""


def _labels(cfg: Config, p: ServicePlan, info: ReleaseInfo, stamp: Mapping[str, str]) -> dict[str, str]:
    """OCI labels the Dockerfile does not set itself (from the same build args), plus the pipeline's own: the
    input digest and the build's facts (`build_stamp`).

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
    # The service is named by the OCI title label and the cache tag.
    return {**{k: v for k, v in oci.items() if k not in dockerfile}, LABEL_INPUT_DIGEST: p.input_digest,
            LABEL_BUILD: json.dumps(dict(stamp), separators=(",", ":"), sort_keys=True)}


def _build_one(cfg: Config, p: ServicePlan, info: ReleaseInfo, log_dir: Path, no_cache: bool,
               stop: threading.Event, builder: buildkit.Builder, reporter: Reporter, *, run_id: str = "",
               engine_version: str = "") -> BuildResult:
    """Build one service: one image (native), or one per platform in order (cross-compiled: the builder
    stage runs on the build machine). The primary platform's image gets the service's tags; each image gets
    its cache tag. Every platform's builder output goes to the same log."""
    log = log_dir / f"{p.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    stamp = build_stamp(info, run_id, now_iso(), builder, engine_version)
    # Opens the service's span before the builder's.
    reporter.step("build", p.name, f"starting the build ({p.why or p.reason})")
    native = native_platform()
    primary = primary_platform(p.platforms, native) if p.platforms else None
    targets: list[Platform | None] = list(p.platforms) or [None]
    images: dict[str, str] = {}
    cached: list[str] = []
    with log.open("w") as fh:
        for plat in targets:
            iid = log_dir / (f"{p.name}.iid" if plat is None else f"{p.name}.{plat.slug}.iid")
            iid.unlink(missing_ok=True)
            progress = BuildProgress()
            label = f"[{plat}] " if plat is not None and len(targets) > 1 else ""
            if plat is not None:
                fh.write(f"=== {p.name} for {plat} ===\n")

            def on_line(line: str, progress: BuildProgress = progress, label: str = label) -> None:
                fh.write(line + "\n")
                fh.flush()
                reporter.detail(f"{p.name}: {label}{line}")
                # Each Dockerfile step's state changes are progress of the running build ("running"); the
                # service's own outcome is reported once by execute_plan (done | failed), a reuse as "cached".
                for ev in progress.feed(line):
                    if ev.state == "failed":
                        continue
                    took = f" {ev.seconds:.1f}s" if ev.seconds is not None else ""
                    note = {"running": "", "cached": " — cached", "done": f" — done{took}"}[ev.state]
                    reporter.step("build", p.name, f"{label}{ev.name}{note}", "running")

            rc = buildkit.build(
                builder, context=p.service.context, dockerfile=p.service.dockerfile,
                tags=p.refs if plat is None or plat == primary else [], build_args=p.build_args,
                labels=_labels(cfg, p, info, stamp), no_cache=no_cache, on_line=on_line, timeout=cfg.build.timeout_s,
                iidfile=iid, stop=stop, platform=None if plat is None or plat == native else str(plat),
            )
            cached += progress.cached_steps()
            took = time.monotonic() - t0
            if stop.is_set() and rc != 0:
                return BuildResult(p.name, BuildStatus.CANCELLED, None, took, log, "stopped by --fail-fast", p.why,
                                   tuple(cached))
            if rc != 0 or not iid.exists():
                step, tail = progress.failing_step(), progress.failure_tail()
                if step is not None:
                    reporter.excerpt(f"{p.name}: {label}{step} failed (full log: {log})", tail[1:])
                else:
                    reporter.excerpt(f"{p.name}: {label}last lines of the build (full log: {log})", tail)
                return BuildResult(p.name, BuildStatus.FAILED, None, took, log,
                                   f"{builder.label} exited {rc}{' for ' + str(plat) if plat else ''}; log: {log}",
                                   p.why, tuple(cached))
            image_id = iid.read_text().strip()
            if plat is None:
                images[""] = image_id
                repo, tag = cache_ref(p.name, p.input_digest).rsplit(":", 1)
                docker.tag_image(image_id, repo, tag)
            else:
                assert primary is not None
                images[str(plat)] = image_id
                tag_child(p.name, p.input_digest, plat, primary, image_id)
    took = time.monotonic() - t0
    origin = origin_of(stamp, now_iso())
    if primary is None:
        return BuildResult(p.name, BuildStatus.BUILT, images[""], took, log, "", p.why, tuple(cached), origin=origin)
    return BuildResult(p.name, BuildStatus.BUILT, images[str(primary)], took, log, "", p.why, tuple(cached), images,
                       origin=origin)


def _record(m: Manifest, p: ServicePlan, r: BuildResult) -> None:
    res: dict[str, Any] = {"status": r.status, "image_id": r.image_id, "duration_s": round(r.duration_s, 2),
                           "build_args": dict(p.build_args), "base_images": dict(p.base_images)}  # for provenance
    if r.log:
        res["log"] = str(r.log)
    if r.reason:
        res["reason"] = r.reason
    if r.why:
        res["why"] = r.why
    if p.registry_note and r.status != BuildStatus.REUSED:   # why no registry's image was taken (reuse_from too)
        res["registry_note"] = p.registry_note
    if r.platform_images:
        res["platforms"] = dict(r.platform_images)   # platform → local image ID; image_id is the primary's
    if r.origin:
        res["origin"] = dict(r.origin)
    if r.reuse:
        res["reuse"] = dict(r.reuse)
    if p.inputs is not None and r.status in (BuildStatus.BUILT, BuildStatus.REUSED):
        res.update(_materials(p.inputs))
    with m.batch():   # one manifest write for both
        m.set_service(p.name, repository=p.repository, tags=list(p.tags), input_digest=p.input_digest)
        m.record(p.name, "build", res)


def _materials(inputs: InputRecord) -> dict[str, str]:
    """The Dockerfile's digest and the context's (sha256 of its file list, path → "mode:sha256", as canonical
    JSON), both "sha256:<hex>", from the inputs the input digest itemises."""
    files = json.dumps(dict(sorted(inputs.files.items())), separators=(",", ":")).encode()
    return {"dockerfile_digest": f"sha256:{inputs.dockerfile}",
            "context_digest": "sha256:" + hashlib.sha256(files).hexdigest()}


def execute_plan(cfg: Config, plan: BuildPlan, info: ReleaseInfo, manifest: Manifest, reporter: Reporter, *,
                 workers: int, fail_fast: bool, no_cache: bool, log_dir: Path, run_id: str = "") -> list[BuildResult]:
    """Reuse what the plan found, build the rest in parallel with the plan's builder; records each service's
    `build` record (with `why`).

    Each service's full builder output goes to `<log_dir>/<service>.log`; the reporter gets each Dockerfile
    step as progress and, on a failure, the failing step's last lines. The inputs of every image built or
    reused are kept in the local input cache (the next plan's "why rebuilt").

    Provenance: a built image carries the build's facts (`LABEL_BUILD`: commit, `run_id`, start, builder) and its
    record their `origin`; a reused image's record keeps the origin read from its labels and adds `reuse` (this
    run's id, commit and time). Engine queries: one inspect per reused image, one version call when building.
    """
    builder = plan.builder or buildkit.detect(cfg.build.builder)
    cache = input_cache(cfg)
    results: list[BuildResult] = []
    with manifest.batch():   # the reused services' records: one manifest write, not two per service
        for p in plan.services:
            if p.action == "reuse" and p.existing_image:
                t0 = time.monotonic()
                for ref in p.refs:
                    if ref in p.existing_tags:   # the engine already names the image so (seen by the plan)
                        continue
                    repo, tag = ref.rsplit(":", 1)
                    docker.tag_image(p.existing_image, repo, tag)
                r = BuildResult(p.name, BuildStatus.REUSED, p.existing_image, time.monotonic() - t0, None, p.reason,
                                platform_images=dict(p.existing_children),
                                origin=origin_from_image(docker.inspect(p.existing_image)),
                                reuse={"run_id": run_id, "commit": info.revision, "at": now_iso()})
                reporter.step("build", p.name, f"unchanged ({p.reason}); tagged {', '.join(p.tags)}", "cached")
                _record(manifest, p, r)
                if p.inputs is not None:
                    cache.save(p.name, p.inputs)
                results.append(r)
            elif p.action == "reuse" and p.registry_image is not None:
                # Reused where it is: not pulled (scan reads the registry, smoke pulls by digest), not tagged
                # (the push puts the same manifest under the new tags).
                ri = p.registry_image
                r = BuildResult(p.name, BuildStatus.REUSED, ri.image_id, 0.0, None, p.reason,
                                origin=origin_from_image(ri.as_inspect()),
                                reuse={"run_id": run_id, "commit": info.revision, "at": now_iso(),
                                       "registry_image": ri.ref,
                                       **({"from_environment": ri.environment} if ri.environment else {})})
                reporter.step("build", p.name, p.reason, "cached")
                _record(manifest, p, r)
                if p.inputs is not None:
                    cache.save(p.name, p.inputs)
                results.append(r)
    to_build = [p for p in plan.services if p.action == "build"]
    stop = threading.Event()
    engine_version = _engine_version() if to_build else ""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="build") as pool:
        futures: dict[Future[BuildResult], ServicePlan] = {
            pool.submit(_build_one, cfg, p, info, log_dir, no_cache, stop, builder, reporter, run_id=run_id,
                        engine_version=engine_version): p for p in to_build}
        if to_build:
            reporter.info(f"building {len(to_build)} image(s) with {workers} worker(s), {builder.label}: "
                          f"{', '.join(p.name for p in to_build)}")
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    p = futures[f]
                    r = f.result() if not f.cancelled() else BuildResult(p.name, BuildStatus.CANCELLED, None, 0.0, None,
                                                                          "not started: --fail-fast", p.why)
                    results.append(r)
                    _record(manifest, p, r)
                    if r.status == "built" and p.inputs is not None:
                        cache.save(p.name, p.inputs)
                    done_text = f"built in {r.duration_s:.1f}s ({len(r.cached_steps)} step(s) from cache)"
                    reporter.step("build", p.name, r.reason or done_text,
                                  "failed" if r.status == "failed" else "done")
                    if r.status == "failed" and fail_fast and not stop.is_set():
                        reporter.warn(f"{p.name} failed: --fail-fast stops the other builds")
                        stop.set()
                        for other in pending:
                            other.cancel()
        except KeyboardInterrupt:
            stop.set()
            for other in pending:
                other.cancel()
            raise
    return results


def summarize(results: list[BuildResult], reporter: Reporter, builder: buildkit.Builder | None = None) -> None:
    """The build summary: per service its result, image, duration and why (rebuilt: "main.go modified")."""
    def detail(r: BuildResult) -> str:
        plats = f" [{', '.join(r.platform_images)}]" if r.platform_images else ""
        if r.status == "built":
            return f"rebuilt: {r.why}; {len(r.cached_steps)} step(s) from cache; log {r.log}{plats}"
        return (r.reason or (str(r.log) if r.log else "")) + plats

    if builder is not None:
        reporter.info(f"built with {builder.label} ({builder.why})")
    reporter.table("build summary", ("service", "result", "image", "duration", "why / log"),
                   [(r.service, r.status, (r.image_id or "-")[7:19], f"{r.duration_s:.1f}s", detail(r))
                    for r in sorted(results, key=lambda r: r.service)])


def dry_run_plan(cfg: Config, env: Environment, services: list[str], reporter: Reporter) -> BuildPlan:
    """`invoke build --dry-run`: the plan (tags, input digests, actions) with nothing built or recorded."""
    plan = make_plan(cfg, env, cfg.select(services), release_info(cfg, env), no_cache=False, provision_bases=False,
                     registries=RegistryClients(cfg))
    print_plan(plan, reporter)
    return plan


class BuildStage(BaseStage):
    """Plan by input digest, reuse unchanged images, build the rest in parallel (exit 1 when one fails)."""

    name = "build"

    def holds(self, ctx: RunContext) -> str | None:
        """Every recorded image still exists: in the engine (by ID), or, reused from the registry and not
        pulled since, in the registry (by digest: one HEAD)."""
        for name in ctx.selected():
            built = ctx.manifest.built(name)
            if built is None or not built.ok:
                return f"{name} has no built image recorded"
            if built.registry_image and docker.image_id(str(built.image_id)) is None:
                gone_remote = registry_holds(ctx.registries, built.registry_image)
                if gone_remote:
                    return f"{gone_remote}; building {name} again"
                continue
            if docker.image_id(str(built.image_id)) is None:
                return f"image {str(built.image_id)[7:19]} of {name} is gone from the engine; building again"
            gone = children_present(built.platform_images)
            if gone:
                return f"the {gone} of {name} is gone from the engine; building again"
        return None

    def run(self, ctx: RunContext) -> StageSummary:
        no_cache = ctx.options.no_cache
        plan = make_plan(ctx.cfg, ctx.env, ctx.cfg.select(ctx.services), ctx.info, no_cache=no_cache,
                         provision_bases=True, reporter=ctx.reporter, registries=ctx.registries)
        print_plan(plan, ctx.reporter)
        with ctx.manifest.batch():
            for p in plan.services:
                if p.action != "skip":
                    ctx.manifest.set_service(p.name, repository=p.repository, tags=list(p.tags),
                                             input_digest=p.input_digest)
        log_dir = ctx.run_dir / "build"
        results = execute_plan(ctx.cfg, plan, ctx.info, ctx.manifest, ctx.reporter,
                               workers=ctx.options.workers or default_workers(ctx.cfg),
                               fail_fast=ctx.options.fail_fast, no_cache=no_cache, log_dir=log_dir,
                               run_id=ctx.run_id)
        summarize(results, ctx.reporter, plan.builder)
        counts = {s: sum(1 for r in results if r.status == s) for s in ("built", "reused", "failed", "cancelled")}
        failed = [r.service for r in results if r.status == "failed"]
        if failed or counts["cancelled"]:
            raise StageFailed(f"build failed for {', '.join(failed) or 'cancelled builds'}; logs under {log_dir}",
                              "read the log, fix the Dockerfile or sources, rerun (built images are kept)")
        builder = plan.builder.kind if plan.builder else ""
        return StageSummary(f"{counts['built']} built, {counts['reused']} reused ({builder})",
                            {**counts, "builder": builder})
