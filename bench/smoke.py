"""Smoke-stage wall time: full runs (images present) split into up / probes / down; target < 30 s.

    .venv/bin/python bench/smoke.py [--runs N] [--manifest PATH]

Each run is the real stage (`smoke_release`: resolve images, env file, compose up --wait, every probe,
teardown + label sweep). Baseline in the same run: the bare compose cycle of the smallest stack
(NATS alone: up --wait, then down --volumes) — the engine's fixed cost of one compose project on this
machine at this moment; the full run is reported as a ratio of it.
Uses the Release manifest given (default .pipeline/manifest.json); without one, the build stage builds
(or reuses) the four images into a temporary manifest first.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.config import Config, load_config
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.reporter import PlainReporter
from pipeline.core.vocab import LABEL_RUN as RUN_LABEL
from pipeline.local import stack_spec
from pipeline.stages.smoke import SMOKE_VARIABLES, smoke_release
from pipeline.tools.compose import ComposeProject
from pipeline.tools.docker import remove_labelled


def manifest_with_images(cfg: Config, path: Path | None, tmp: Path) -> Manifest:
    if path and path.exists():
        return Manifest.load(path)
    from pipeline.stages.build import execute_plan, make_plan
    from pipeline.versioning.releaseinfo import release_info

    env = cfg.env("local")
    info = release_info(cfg, env)
    m = Manifest.new(tmp / "manifest.json", env=env.name, release_id=info.release_id(env.name), version=info.version)
    plan = make_plan(cfg, env, cfg.services, info, no_cache=False, provision_bases=True)
    execute_plan(cfg, plan, info, m, PlainReporter(sink=lambda _l: None), workers=2, fail_fast=True, no_cache=False,
                 log_dir=tmp / "build-logs")
    return m


def baseline(cfg: Config, manifest: Manifest, tmp: Path) -> float:
    """compose up --wait + down --volumes of NATS alone, with the same files and variables as a smoke run."""
    rid = "bench-base-" + uuid.uuid4().hex[:6]
    images = {**stack_spec.service_images(cfg, manifest), **stack_spec.infra_images(cfg)}
    values = stack_spec.stack_variables(rid, images, stack_spec.new_secrets(), SMOKE_VARIABLES)
    env_file = stack_spec.write_env_file(tmp / f"{rid}.env", values)
    compose = stack_spec.compose_dir(cfg)
    p = ComposeProject(f"veza-{rid}", (compose / stack_spec.BASE_NAME, compose / stack_spec.SMOKE_NAME), env_file,
                       compose, values)
    t0 = time.monotonic()
    try:
        res = p.up(wait_timeout=60, services=["nats"])
        assert res.ok, res.stderr
    finally:
        p.down(volumes=True, stop_timeout=5)
        remove_labelled(RUN_LABEL, rid)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--manifest", type=Path, default=None, help="default: the local environment's manifest")
    args = ap.parse_args()
    cfg = load_config()
    args.manifest = args.manifest or manifest_path(cfg.state_dir, "local")
    with tempfile.TemporaryDirectory(prefix="veza-bench-smoke-") as t:
        tmp = Path(t)
        src = manifest_with_images(cfg, args.manifest, tmp)
        # Work on a copy: the benchmark must not write smoke results into a real release's manifest.
        copy = tmp / "bench-manifest.json"
        copy.write_text(src.path.read_text())
        manifest = Manifest.load(copy)
        env = cfg.env(manifest.env)
        base = [baseline(cfg, manifest, tmp) for _ in range(args.runs)]
        rows = []
        for i in range(args.runs):
            rid = f"bench-smoke-{uuid.uuid4().hex[:8]}"
            run_dir = tmp / rid
            t0 = time.monotonic()
            r = smoke_release(cfg, env, manifest, run_dir, PlainReporter(sink=lambda _l: None), run_id=rid)
            wall = time.monotonic() - t0
            rows.append((wall, r.timings["up_s"], r.timings["probes_s"], r.timings["down_s"]))
            print(f"run {i + 1}: total {wall:5.1f}s  up {r.timings['up_s']:5.1f}s  "
                  f"probes {r.timings['probes_s']:4.1f}s  down {r.timings['down_s']:4.1f}s  "
                  f"({len(r.checks)} checks)", flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    b = statistics.median(base)
    print(f"\nmedian of {args.runs}: total {med[0]:.1f}s = up {med[1]:.1f}s + probes {med[2]:.1f}s + "
          f"down {med[3]:.1f}s (+ {med[0] - med[1] - med[2] - med[3]:.1f}s resolve/config/report)")
    print(f"baseline (NATS-only compose up --wait + down, same files): {b:.1f}s; full smoke = {med[0] / b:.1f}x")
    print(f"target < 30 s: {'met' if med[0] < 30 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.run_facts import with_facts  # date, commit and load at start and end (bench/README.md)

    raise SystemExit(with_facts(main))
