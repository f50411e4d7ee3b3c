"""Benchmark: the deploy stage's resume check, deploy_holds(), against a deployed environment (read-only).

A no-op release runs it once per rerun (issue 15: a no-op local release keeps under 2 s with every check).
Timed N times each:
  - deploy_holds: `kubectl get deployments` and `helm status`, in parallel, then the pure comparison;
  - baseline helm-status: `helm status` alone (the cheapest call that can say "deployed at revision R");
  - baseline sequential: the same two calls one after the other.
Usage: .venv/bin/python bench/deploy_holds.py [--env local] [--runs N]   (needs a deployed release)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.config import load_config
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.reporter import PlainReporter
from pipeline.stages.deploy.drift import deploy_holds
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.tools import helm, kubectl


def _time(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="local")
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    cfg = load_config()
    env = cfg.env(a.env)
    manifest = Manifest.load(manifest_path(cfg.state_dir, env.name))
    rt = ReleaseTarget.of(env)
    reason = deploy_holds(cfg, env, manifest, PlainReporter(verbose=True), rt=rt)
    print(f"deploy_holds({env.name}) → {reason or 'holds'}")
    rows = {
        "deploy_holds": _time(lambda: deploy_holds(cfg, env, manifest, PlainReporter(), rt=rt), a.runs),
        "baseline helm-status": _time(lambda: helm.status(rt.kube, rt.release), a.runs),
        "baseline sequential": _time(lambda: (kubectl.list_json(rt.kube, "deployments", selector=rt.selector),
                                              helm.status(rt.kube, rt.release)), a.runs),
    }
    for name, xs in rows.items():
        print(f"{name:<22} median {statistics.median(xs):.3f} s  min {min(xs):.3f} s  max {max(xs):.3f} s "
              f"({len(xs)} runs)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.run_facts import with_facts  # date, commit and load at start and end (bench/README.md)

    raise SystemExit(with_facts(main))
