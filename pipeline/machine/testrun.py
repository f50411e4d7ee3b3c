"""`invoke test`: ruff, mypy, lint-imports (the layers in pyproject.toml), vulture (dead code), then pytest over
unit + integration + e2e. "No tests ran" is a failure, never a pass."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

from pipeline.core.errors import StageFailed
from pipeline.core.paths import ROOT, VENV_DIR

PYTEST_NO_TESTS = 5
# Dead code at vulture's high confidence (unused imports, arguments, unreachable code: 80 % and up). No whitelist:
# below 80 % vulture also names what Invoke, the stage registry and dataclass fields reach by name.
VULTURE_ARGS = ["pipeline", "tasks.py", "--min-confidence", "80"]
# Three pytest-xdist workers, one per lane (`--lanes`: tests/lanes.py): the tests that use the local cluster one at
# a time, the Helm 4 deploy sequences beside them (own namespaces), every other test beside both; unit tests on any
# worker. Most of a cluster test's time is waiting on the cluster, so the lanes fit two cores.
# `--no-loadscope-reorder` keeps the collection order, which starts the cluster lanes first.
PYTEST_WORKERS = 3


def _step(name: str, argv: list[str]) -> int:
    print(f"\n=== {name}: {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(argv, cwd=ROOT)
    print(f"=== {name}: exit {rc} in {time.monotonic() - t0:.1f}s", flush=True)
    return rc


def run_tests(unit_only: bool = False, keyword: str = "", lint: bool = True, extra: str = "",
              workers: int = PYTEST_WORKERS) -> None:
    """`workers`: pytest-xdist workers (0: one pytest process, in collection order, as before xdist)."""
    bin_ = VENV_DIR / "bin"
    failed: list[str] = []
    if lint:
        if _step("ruff", [str(bin_ / "ruff"), "check", "pipeline", "tasks.py", "tests", "bench"]):
            failed.append("ruff")
        if _step("mypy", [str(bin_ / "mypy")]):
            failed.append("mypy")
        if _step("lint-imports", [str(bin_ / "lint-imports"), "--no-cache"]):
            failed.append("lint-imports (a layer imports upward: see [tool.importlinter] in pyproject.toml)")
        if _step("vulture", [str(bin_ / "vulture"), *VULTURE_ARGS]):
            failed.append("vulture (dead code)")
    # Unit tests first (seconds, no engine), then the real engine, registry, Trivy, Helm and cluster.
    args = [str(bin_ / "python"), "-m", "pytest", "tests/unit"]
    if not unit_only:
        args += ["tests/integration", "tests/e2e"]
    if workers > 0:
        args += ["-n", str(workers), "--lanes", "--no-loadscope-reorder"]
    if keyword:
        args += ["-k", keyword]
    args += shlex.split(extra)
    rc = _step("pytest", args)
    if rc == PYTEST_NO_TESTS:
        failed.append("pytest (no tests ran: exit 5 — a run that tests nothing must not pass)")
    elif rc:
        failed.append(f"pytest (exit {rc})")
    if failed:
        raise StageFailed(f"tests failed: {'; '.join(failed)}")
    print("\nall checks passed", file=sys.stderr)
