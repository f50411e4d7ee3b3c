"""Benchmark of `invoke bases`: cold (no images, no rootfs cache), warm cache (rootfs tarball cached, no images),
and the no-op rerun (everything present), on the real engine.

The cold and warm runs use private image names (veza-bench-<id>/...) and a private cache directory, so the
project's own base images, which other work depends on, are never removed. The rerun is the real command,
`invoke bases`, timed as a process (interpreter start-up included) against the project's images.

    .venv/bin/python bench/bases_bench.py            # prints one line per figure, then the ratios
    .venv/bin/python bench/bases_bench.py --rerun-only
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rerun_seconds(repeat: int = 5) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.monotonic()
        subprocess.run([str(ROOT / ".venv/bin/invoke"), "bases"], cwd=ROOT, check=True,
                       capture_output=True, timeout=120)
        out.append(time.monotonic() - t0)
    return out


def isolated_runs() -> tuple[float, float]:
    """(cold, warm-cache) seconds for a full provision under private names and a private cache dir."""
    cache = tempfile.mkdtemp(prefix="veza-bases-bench-")
    os.environ["VEZA_CACHE_DIR"] = cache          # read by pipeline.core.paths at import time
    sys.path.insert(0, str(ROOT))
    from pipeline.core.config import load_config
    from pipeline.local import bases
    from pipeline.tools import docker

    bases.CACHE_DIR = Path(cache)
    run = uuid.uuid4().hex[:8]
    cfg = load_config(check_files=False)
    private = {n: dataclasses.replace(b, local=f"veza-bench-{run}/{b.local.split('/', 1)[-1]}")
               for n, b in cfg.bases.items()}
    cfg = dataclasses.replace(cfg, bases=private)
    order = list(bases.resolve_recipes(private))

    def remove_images() -> None:
        for name in reversed(order):          # children first: a parent cannot go while children exist
            try:
                docker.client().api.remove_image(private[name].local, force=True)
            except Exception:
                pass

    try:
        t0 = time.monotonic()
        bases.ensure_bases(config=cfg, say=lambda line: print("   cold |", line, flush=True))
        cold = time.monotonic() - t0
        remove_images()
        t0 = time.monotonic()
        bases.ensure_bases(config=cfg, say=lambda line: print("   warm |", line, flush=True))
        warm = time.monotonic() - t0
    finally:
        remove_images()
        shutil.rmtree(cache, ignore_errors=True)
    return cold, warm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rerun-only", action="store_true", help="only time the no-op rerun")
    args = ap.parse_args()
    reruns = rerun_seconds()
    rerun = statistics.median(reruns)
    print(f"rerun (all present), `invoke bases` process, median of {len(reruns)}: {rerun:.2f} s "
          f"(min {min(reruns):.2f}, max {max(reruns):.2f}); target < 2 s")
    if args.rerun_only:
        return 0
    cold, warm = isolated_runs()
    print(f"cold (no images, no rootfs cache):        {cold:.1f} s")
    print(f"warm cache (rootfs tarball cached):       {warm:.1f} s  ({warm / cold:.2f} x cold)")
    print(f"rerun:                                    {rerun:.2f} s  ({rerun / cold:.4f} x cold, "
          f"{cold / rerun:.0f}x faster)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.run_facts import with_facts  # date, commit and load at start and end (bench/README.md)

    raise SystemExit(with_facts(main))
