"""Build-stage benchmarks, measured in one run against baselines on the same machine.

    .venv/bin/python bench/build_bench.py [--skip-cold]

1. No-op build (all services, nothing changed, images present): `invoke build` vs running `docker build`
   with a full cache hit for the same Dockerfiles sequentially. Targets: ratio ≤ 0.5, absolute < 1.5 s.
2. Cold build of all services (--no-cache): parallel (workers=4) vs sequential (workers=1). Target ≤ 0.8×.
3. One service changed: only it rebuilds; `invoke build` vs that service's own `docker build`. Target ≤ +1 s.

Works on a temporary clone of the committed tree (the work tree is not touched).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INVOKE = ROOT / ".venv/bin/invoke"


def sh(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    cp = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600, check=False)
    took = time.monotonic() - t0
    if cp.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed:\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}")
    return took


def invoke_build(clone: Path, *args: str) -> float:
    env = {**os.environ, "VEZA_CONFIG": str(clone / "pipeline.toml"), "CI": "true"}
    return sh([str(INVOKE), "-r", str(ROOT), "build", "--env", "dev", *args], clone, env)


def plain_builds(clone: Path, names: list[str] | None = None) -> float:
    """`docker build` of each service sequentially with the same args the pipeline passes."""
    sys.path.insert(0, str(ROOT))
    from pipeline.core.config import load_config
    from pipeline.stages.build import make_plan
    from pipeline.versioning.releaseinfo import release_info

    cfg = load_config(clone / "pipeline.toml")
    env = cfg.env("dev")
    plan = make_plan(cfg, env, cfg.select(names), release_info(cfg, env), no_cache=False, provision_bases=False)
    total = 0.0
    for p in plan.services:
        if p.action == "skip":
            continue
        argv = ["docker", "build", "-q", "-f", str(p.service.dockerfile), "-t", f"bench-plain/{p.name}:latest"]
        for k, v in sorted(p.build_args.items()):
            argv += ["--build-arg", f"{k}={v}"]
        total += sh([*argv, str(p.service.context)], clone, {**os.environ, "DOCKER_BUILDKIT": "0"})
    return total


def commit(clone: Path, rel: str, text: str) -> None:
    (clone / rel).write_text(text)
    subprocess.run(["git", "-C", str(clone), "add", rel], check=True)
    subprocess.run(["git", "-C", str(clone), "commit", "-qm", f"bench: change {rel}"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-cold", action="store_true", help="skip the (minutes-long) cold builds")
    args = ap.parse_args()
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="veza-bench-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "config", "user.email", "bench@example.invalid"], check=True)
        subprocess.run(["git", "-C", str(clone), "config", "user.name", "bench"], check=True)
        invoke_build(clone)  # warm: every image present

        noop = statistics.median(invoke_build(clone) for _ in range(3))
        plain = statistics.median(plain_builds(clone) for _ in range(3))
        rows.append(("no-op build, 4 services", f"{noop:.2f} s", f"{plain:.2f} s (sequential cached docker build)",
                     f"{noop / plain:.2f}× (target ≤ 0.5×, < 1.5 s)"))

        if not args.skip_cold:
            seq = invoke_build(clone, "--no-cache", "--workers", "1")
            par = invoke_build(clone, "--no-cache", "--workers", "4")
            rows.append(("cold build, 4 services", f"{par:.1f} s (4 workers)", f"{seq:.1f} s (1 worker)",
                         f"{par / seq:.2f}× (target ≤ 0.8×)"))

        # Unique content: an image built from the same inputs earlier would (rightly) be reused.
        stamp = f"{time.time_ns()}"
        commit(clone, "services/docs/site/bench.txt", f"{stamp}-1\n")
        one = invoke_build(clone)
        commit(clone, "services/docs/site/bench.txt", f"{stamp}-2\n")
        own = plain_builds(clone, ["veza-docs"])
        rows.append(("one service changed (docs)", f"{one:.2f} s", f"{own:.2f} s (its own docker build)",
                     f"+{one - own:.2f} s (target ≤ +1 s)"))

    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}"
    print(f"\nbuild benchmarks — {machine}\n")
    print("| case | pipeline | baseline | ratio |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
