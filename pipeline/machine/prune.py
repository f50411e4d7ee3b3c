"""`invoke prune`: cache hygiene on the engine — the build cache over its cap, the pipeline's dangling images,
and its own old cache tags — with a dry run that lists what would go.

What is removed, and why it is safe on a shared engine:
- BuildKit cache records beyond `[build].cache_cap_mb`, least recently used first (the engine's own
  `keep-storage` pruning; records in use are never removed);
- dangling images carrying the pipeline's input-digest label (images the pipeline built and later re-tagged);
  with `all_dangling`, every dangling image;
- cache tags `<cache repo>/<service>:in-<digest>` beyond the newest `keep` per service, except tags of images
  the manifest still records (a removed tag only costs a rebuild: the input digest finds nothing).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from pipeline.core.config import Config
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import CACHE_REPO, LABEL_INPUT_DIGEST, LABEL_RUN
from pipeline.tools import docker


@dataclass(frozen=True)
class PruneItem:
    """One thing prune would remove: kind (build cache | dangling image | cache tag), what, bytes, why."""

    kind: str
    ref: str
    size: int
    why: str


@dataclass
class PrunePlan:
    """What `invoke prune` would remove; build cache figures in bytes."""

    items: list[PruneItem] = field(default_factory=list)
    cache_bytes: int = 0
    cap_bytes: int = 0

    @property
    def total(self) -> int:
        return sum(i.size for i in self.items)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cache_over_cap(records: list[docker.CacheRecord], cap_bytes: int) -> list[docker.CacheRecord]:
    """The records a least-recently-used trim to cap_bytes removes (in-use records stay), oldest first."""
    total = sum(r.size for r in records)
    doomed = []
    for r in sorted((r for r in records if not r.in_use), key=lambda r: r.last_used):
        if total <= cap_bytes:
            break
        doomed.append(r)
        total -= r.size
    return doomed


def old_cache_tags(images: list[dict[str, object]], cache_repo: str, keep: int,
                   protected: set[str]) -> list[tuple[str, str]]:
    """(tag, image ID) of cache tags beyond the newest `keep` per service and platform (a multi-platform
    build's children are tagged `in-<digest>-<platform>`: build_platforms.cache_ref); images in `protected`
    are kept."""
    per_service: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for img in images:
        for tag in img.get("RepoTags") or []:  # type: ignore[attr-defined]
            repo, _, name = str(tag).rpartition(":")
            if repo.startswith(cache_repo + "/"):
                platform = name[len("in-") + 32:] if name.startswith("in-") else ""
                per_service[f"{repo}:{platform}"].append((int(img.get("Created") or 0), str(tag), str(img["Id"])))  # type: ignore[call-overload]
    doomed = []
    for entries in per_service.values():
        for _created, tag, image_id in sorted(entries, reverse=True)[keep:]:
            if image_id not in protected:
                doomed.append((tag, image_id))
    return sorted(doomed)


def plan_prune(*, cap_bytes: int, cache_repo: str, keep: int, protected: set[str],
               all_dangling: bool = False, run: str | None = None) -> PrunePlan:
    """Look at the engine and list what prune would remove (nothing is removed here).

    run: only images labelled with this run (veza.pipeline.run=<run>); the build cache is then left alone.
    """
    plan = PrunePlan(cap_bytes=cap_bytes)
    if run is None:
        records = docker.build_cache_records()
        plan.cache_bytes = sum(r.size for r in records)
        for r in cache_over_cap(records, cap_bytes):
            plan.items.append(PruneItem("build cache", r.id, r.size,
                                        f"last used {r.last_used[:19]}; cache over the cap"))
    labels = [LABEL_INPUT_DIGEST, *([f"{LABEL_RUN}={run}"] if run else [])]
    if all_dangling and run is None:
        dangling = docker.client().api.images(filters={"dangling": True})
    else:
        dangling = docker.images_with_label(*labels, dangling=True)
    for img in dangling:
        plan.items.append(PruneItem("dangling image", str(img["Id"]), int(img.get("Size") or 0),
                                    "untagged image the pipeline built" if not all_dangling else "untagged image"))
    for tag, image_id in old_cache_tags(docker.images_with_label(*labels), cache_repo, keep, protected):
        plan.items.append(PruneItem("cache tag", tag, 0, f"older than the newest {keep} of its service "
                                                         f"(image {image_id[7:19]})"))
    return plan


def apply_prune(plan: PrunePlan, reporter: Reporter) -> list[PruneItem]:
    """Remove what the plan lists; returns what stayed (in use, or refused by the engine), each said."""
    kept = []
    if any(i.kind == "build cache" for i in plan.items):
        freed = docker.prune_build_cache(plan.cap_bytes)
        reporter.info(f"build cache trimmed to {_mb(plan.cap_bytes)}: {_mb(freed)} freed")
    for item in plan.items:
        if item.kind == "build cache":
            continue
        refused = docker.remove_image(item.ref)
        if refused:
            reporter.warn(f"kept {item.kind} {item.ref}: {refused}")
            kept.append(item)
        else:
            reporter.detail(f"removed {item.kind} {item.ref}")
    return kept


def report_plan(plan: PrunePlan, reporter: Reporter, *, dry_run: bool) -> None:
    """One line per item (dry run) and the totals."""
    verb = "would remove" if dry_run else "removing"
    reporter.info(f"build cache: {_mb(plan.cache_bytes)} (cap {_mb(plan.cap_bytes)})")
    for item in plan.items:
        size = f" {_mb(item.size)}" if item.size else ""
        reporter.info(f"  {verb} {item.kind} {item.ref}{size} — {item.why}")
    if not plan.items:
        reporter.info("nothing to prune")
    else:
        counts: dict[str, int] = defaultdict(int)
        for item in plan.items:
            counts[item.kind] += 1
        reporter.info(f"{verb}: " + ", ".join(f"{n} {k}(s)" for k, n in counts.items()) + f", {_mb(plan.total)}")


def run_prune(cfg: Config, reporter: Reporter, *, dry_run: bool, keep: int = 2, all_dangling: bool = False,
              cache_repo: str = CACHE_REPO) -> PrunePlan:
    """`invoke prune`: plan, report, and (unless dry_run) remove. Images any environment's manifest records
    are kept."""
    if keep < 1:
        raise UsageError(f"--keep {keep} keeps no cache tag", "give 1 or more (the newest cache tags per service)")
    protected: set[str] = set()
    for env_name in cfg.environments:
        path = manifest_path(cfg.state_dir, env_name)
        m = Manifest.load_or_none(path) if path.exists() else None
        for svc in m.services() if m is not None else []:
            built = m.built(svc) if m is not None else None
            if built is not None and built.image_id:
                protected.add(str(built.image_id))
                protected.update(built.platform_images.values())
    plan = plan_prune(cap_bytes=cfg.build.cache_cap_mb * 1_000_000, cache_repo=cache_repo, keep=keep,
                      protected=protected, all_dangling=all_dangling)
    report_plan(plan, reporter, dry_run=dry_run)
    if dry_run:
        reporter.info("dry run: nothing removed")
    elif plan.items:
        apply_prune(plan, reporter)
    return plan
