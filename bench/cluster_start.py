"""Local cluster figures: the cold build (read from the cache's build.json, measured when it was built) and the
warm start (binaries cached) to a Ready node with the default service account, measured now.

Baseline in the same run: the time to a ready apiserver (etcd + apiserver only); the warm start is reported
as a ratio of it. Usage (root): .venv/bin/python bench/cluster_start.py [--runs N]
Stops a running local cluster first, and leaves it as it found it (running or not).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.local.cluster import build, cluster_down, cluster_up
from pipeline.local.cluster.start import running_state


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    was_running = running_state() is not None
    bindir = build.cached_binaries()
    if bindir is None:
        print("binaries not built yet: this run includes the cold build")
    lines: list[str] = []

    def capture(line: str) -> None:
        lines.append(line)

    import pipeline.local.cluster as cl

    cl._say = capture  # quiet, and keep the lines to read the apiserver-ready lap
    ready, api = [], []
    for _ in range(args.runs):
        if running_state() is not None:
            cluster_down()
        lines.clear()
        t0 = time.monotonic()
        cluster_up()
        ready.append(time.monotonic() - t0)
        lap = next((float(m.group(1)) for ln in lines if (m := re.search(r"apiserver ready .*\((\d+\.\d+)s\)", ln))),
                   float("nan"))
        api.append(lap)
    if not was_running:
        cluster_down()
    info = json.loads((build.cached_binaries() or Path("/nonexistent")).parent.joinpath("build.json").read_text())
    med_ready, med_api = statistics.median(ready), statistics.median(api)
    print(f"cold build (binaries, measured {info['built_at']}): {info['total_s']:.0f}s  steps: {info['timings_s']}")
    print(f"warm start to Ready node + default SA, median of {args.runs}: {med_ready:.1f}s "
          f"(runs: {', '.join(f'{r:.1f}' for r in ready)}; target < 30s)")
    print(f"baseline: apiserver ready (etcd + apiserver), median: {med_api:.1f}s; "
          f"warm start / baseline = {med_ready / med_api:.1f}x")
    print(f"cold build / warm start = {info['total_s'] / med_ready:.0f}x")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.run_facts import with_facts  # date, commit and load at start and end (bench/README.md)

    raise SystemExit(with_facts(main))
