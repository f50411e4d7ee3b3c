"""Build-stage benchmarks (issue 19): the no-op build, and cold builds on BuildKit against the legacy builder.

    .venv/bin/python bench/build_bench.py [--rounds 3] [--port 19400] [--cases noop,cold] [--skip-cold]

The change loop against fair baselines (the seed loop and a careful parallel script on the same BuildKit) is
bench/change_loop.py (issue 28). The `go` and `rust` cases here compare with the seed loop on the legacy builder,
which has no cache mounts: that ratio measures the Dockerfiles' cache mounts, not the pipeline, so they run only
when asked for (`--cases go,rust`).

Pipeline side: `invoke build --env bench push --env bench` (both tasks in one invoke process, as DESIGN.md's
`invoke build push`; interpreter start-up included) with the builder the machine offers; the same change is
also measured as two processes (`invoke build`, then `invoke push`), the method of the earlier runs.
The pipeline runs from the clone (`invoke -r <clone>`) with its bytecode compiled once first, as an installed
package has it; the no-op case is also measured without that bytecode (every module compiled at each run, as
in a session that sets PYTHONDONTWRITEBYTECODE=1 on a tree that never had a __pycache__).
Seed side: the seed guide's loop — for each of the four services, sequentially, `docker build` (the CLI first
on PATH, legacy builder) then `docker push`.
Both push to a private docker-registry on 127.0.0.1:<port> (temporary storage). Everything runs on a temporary
clone of the committed tree; before each side of each round one line is appended to one service's source and
committed (so each side really rebuilds that service).

Cases: one changed Go service (target ≤ 0.25×), one changed Rust service (≤ 0.35×), medians of `rounds`;
no-op build (< 1 s, median of 9; without bytecode: median of 5); cold build of all four, BuildKit with
empty cache mounts vs the legacy builder (`--no-cache` both, same workers), once in each order: not slower.
The seed side builds the legacy translation of the same Dockerfiles (pipeline.tools.buildkit.legacy_dockerfile),
so both sides compile with the same settings.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
INVOKE = ROOT / ".venv/bin/invoke"

from pipeline.core.config import Config, load_config  # noqa: E402
from pipeline.local.registry import LocalRegistry  # noqa: E402
from pipeline.stages.plan import base_build_args  # noqa: E402
from pipeline.tools.buildkit import detect, legacy_dockerfile  # noqa: E402

ENV = """
[environments.bench]
registry = "{registry}"
registry_namespace = "bench-{run}"
namespace = "bench"
values_file = "helm/veza/values-dev.yaml"
stages = ["build", "push"]
tags = ["sha"]
"""


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


class StepFailed(Exception):
    """A measured command failed (its output is in the message)."""


def sh(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    cp = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600, check=False)
    took = time.monotonic() - t0
    if cp.returncode != 0:
        raise StepFailed(f"bench: {' '.join(argv)} failed:\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}")
    return took


def measured(clone: Path, rel: str, note: str, side: Callable[[], float]) -> float:
    """One side of a round: a fresh one-line change, then the side's time. The engine is shared with other
    people's builds and tests (an image pruned under a running legacy build fails it): a failed side is
    reported and measured once more after another fresh change (so it recompiles again; the failed attempt's
    time is not counted); a second failure ends the bench."""
    change(clone, rel, note)
    try:
        return side()
    except StepFailed as exc:
        first = str(exc).splitlines()
        print(f"  {note}: failed, measured again after a new change ({first[-1] if first else ''})", flush=True)
    change(clone, rel, f"{note} (again)")
    return side()


def invoke(clone: Path, *args: str, extra_env: dict[str, str] | None = None) -> float:
    env = {**os.environ, "VEZA_CONFIG": str(clone / "pipeline.toml"), "CI": "true", **(extra_env or {})}
    return sh([str(INVOKE), "-r", str(clone), *args], clone, env)


def pipeline_build_push(clone: Path) -> float:
    """`invoke build push`: both tasks in one process."""
    return invoke(clone, "build", "--env", "bench", "push", "--env", "bench")


def pipeline_two_processes(clone: Path) -> float:
    """`invoke build` then `invoke push`: two processes, two interpreter start-ups."""
    return invoke(clone, "build", "--env", "bench") + invoke(clone, "push", "--env", "bench")


def compile_bytecode(clone: Path) -> None:
    """The pipeline's bytecode, compiled once (as a wheel install does; a tree run without
    PYTHONDONTWRITEBYTECODE writes it at its first run)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(clone / "pipeline"), str(clone / "tasks.py")],
                   check=True, timeout=300)


def drop_bytecode(clone: Path) -> None:
    import shutil

    for d in clone.rglob("__pycache__"):
        shutil.rmtree(d)


def seed_loop(clone: Path, cfg: Config, registry: str, run: str, work: Path) -> float:
    """The seed guide's loop: docker build then docker push per service, sequentially (legacy builder)."""
    total = 0.0
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    for svc in cfg.services:
        df = work / f"{svc.name}.Dockerfile"
        df.write_text(legacy_dockerfile(svc.dockerfile.read_text()))
        ref = f"{registry}/seed-{run}/{svc.name}:latest"
        argv = ["docker", "build", "-q", "-f", str(df), "-t", ref, "--label", f"veza.pipeline.run=bench-{run}"]
        for k, v in sorted(base_build_args(cfg, svc, {b: True for b in svc.bases}).items()):
            argv += ["--build-arg", f"{k}={v}"]
        total += sh([*argv, str(svc.context)], clone, env)
        total += sh(["docker", "push", "-q", ref], clone, env)
    return total


def change(clone: Path, rel: str, note: str) -> None:
    with (clone / rel).open("a") as fh:
        fh.write(f"// bench {note} {time.time_ns()}\n")
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", f"bench: {note}"], check=True)


def commit_all(clone: Path, msg: str) -> None:
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", msg], check=True)


def keep_logs(clone: Path, dest: Path) -> None:
    """Copy the build logs of the last `invoke build` out of the clone (they outlive the bench)."""
    import shutil

    for log in clone.glob(".pipeline/**/build/*.log"):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, dest / log.name)


def cleanup(registry: str, run: str) -> None:
    import docker

    api = docker.APIClient()
    for img in api.images():
        if any(t.startswith(f"{registry}/") and (f"bench-{run}" in t or f"seed-{run}" in t)
               for t in img.get("RepoTags") or []):
            for t in img["RepoTags"]:
                if t.startswith(f"{registry}/"):
                    try:
                        api.remove_image(t)
                    except docker.errors.APIError:
                        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=19400, help="loopback port of the bench registry")
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold builds (minutes)")
    ap.add_argument("--cases", default="noop,cold",
                    help="comma-separated subset of go,rust,noop,cold (go and rust: against the legacy builder)")
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    run = uuid.uuid4().hex[:8]
    logs = Path(tempfile.gettempdir()) / f"veza-bench-logs-{run}"
    builder = detect("auto")
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="veza-bench-") as tmp, \
            LocalRegistry(args.port, root=Path(tmp) / "registry") as reg:
        clone = Path(tmp) / "clone"
        work = Path(tmp) / "seed"
        work.mkdir()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        for k, v in (("user.email", "bench@example.invalid"), ("user.name", "bench")):
            subprocess.run(["git", "-C", str(clone), "config", k, v], check=True)
        with (clone / "pipeline.toml").open("a") as fh:
            fh.write(ENV.format(registry=reg.address, run=run))
        commit_all(clone, "bench: env")
        compile_bytecode(clone)
        cfg = load_config(clone / "pipeline.toml")
        try:
            print(f"bench {run}: builder {builder.label}; warming both sides (load {load()})", flush=True)
            pipeline_build_push(clone)
            seed_loop(clone, cfg, reg.address, run, work)
            for key, case, rel, target in (
                    ("go", "Go (veza-backend-api)", "services/backend-api/main.go", 0.25),
                    ("rust", "Rust (veza-chat-server)", "services/chat-server/src/main.rs", 0.35)):
                if key not in cases:
                    continue
                ours, twos, theirs, loads = [], [], [], []
                for n in range(args.rounds):
                    loads.append(load())
                    ours.append(measured(clone, rel, f"pipeline {n}", lambda: pipeline_build_push(clone)))
                    twos.append(measured(clone, rel, f"pipeline two processes {n}",
                                         lambda: pipeline_two_processes(clone)))
                    theirs.append(measured(clone, rel, f"seed {n}",
                                           lambda: seed_loop(clone, cfg, reg.address, run, work)))
                    print(f"  {case} round {n + 1}: pipeline {ours[-1]:.1f} s (two processes {twos[-1]:.1f} s), "
                          f"seed loop {theirs[-1]:.1f} s (load {loads[-1]})", flush=True)
                a, a2, b = statistics.median(ours), statistics.median(twos), statistics.median(theirs)
                rows.append((f"one changed {case}, build + push", f"{a:.1f} s (two processes: {a2:.1f} s)",
                             f"{b:.1f} s", f"{a / b:.2f}× (two processes: {a2 / b:.2f}×; target ≤ {target}×)",
                             ", ".join(loads),
                             " / ".join(f"{x:.1f}" for x in ours) + " (two processes: "
                             + " / ".join(f"{x:.1f}" for x in twos) + ") vs " + " / ".join(f"{x:.1f}" for x in theirs)))
            if "noop" in cases:
                invoke(clone, "build", "--env", "bench")   # the last seed-side change is not built yet
                l0 = load()
                noops = [invoke(clone, "build", "--env", "bench") for _ in range(9)]
                rows.append(("no-op `invoke build`, 4 services (bytecode compiled)",
                             f"{statistics.median(noops):.2f} s", "-", "target < 1 s", l0,
                             " / ".join(f"{x:.2f}" for x in noops)))
                drop_bytecode(clone)
                l0 = load()
                cold = [invoke(clone, "build", "--env", "bench", extra_env={"PYTHONDONTWRITEBYTECODE": "1"})
                        for _ in range(5)]
                compile_bytecode(clone)
                rows.append(("no-op `invoke build`, 4 services (no bytecode: every module compiled)",
                             f"{statistics.median(cold):.2f} s", "-", "target < 1 s", l0,
                             " / ".join(f"{x:.2f}" for x in cold)))
            if "cold" in cases and not args.skip_cold:
                # Both orders (legacy first, then BuildKit first): the second build of a pair runs on a warmer
                # page cache and a hotter machine. BuildKit's cache mounts get ids unique to each build (empty).
                text = (clone / "pipeline.toml").read_text()
                assert 'builder = "auto"' in text
                originals = {df: df.read_text() for df in (clone / "dockerfiles").glob("*.Dockerfile")}

                def cold(kind: str, n: int) -> tuple[float, str]:
                    for df, body in originals.items():
                        df.write_text(re.sub(r"id=(veza-[a-z-]+)", rf"id=\1-bench{run}{n}", body))
                    (clone / "pipeline.toml").write_text(
                        text if kind == "buildkit" else text.replace('builder = "auto"', 'builder = "legacy"'))
                    commit_all(clone, f"bench: cold {kind} {n}")
                    l0 = load()
                    took = invoke(clone, "build", "--env", "bench", "--no-cache")
                    keep_logs(clone, logs / f"cold-{n}-{kind}")
                    return took, l0

                for n, order in enumerate((("legacy", "buildkit"), ("buildkit", "legacy"))):
                    got = {kind: cold(kind, n) for kind in order}
                    (bk, l_bk), (legacy, l_legacy) = got["buildkit"], got["legacy"]
                    rows.append((f"cold build (`--no-cache`), 4 services, {order[0]} first",
                                 f"{bk:.1f} s ({builder.label}, empty cache mounts)",
                                 f"{legacy:.1f} s (legacy builder)",
                                 f"{bk / legacy:.2f}× (target ≤ 1×)", f"BuildKit {l_bk}, legacy {l_legacy}",
                                 f"logs: {logs}"))
        finally:
            cleanup(reg.address, run)
    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}"
    print(f"\nbuild benchmarks — {machine}; builder {builder.label} ({builder.why})\n")
    print("| case | pipeline | seed loop / baseline | ratio | load (1/5/15 min) at start | runs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.run_facts import with_facts  # date, commit and load at start and end (bench/README.md)

    def guarded() -> str | None:
        try:
            main()
        except StepFailed as exc:
            return str(exc)
        return None

    raise SystemExit(with_facts(guarded))
