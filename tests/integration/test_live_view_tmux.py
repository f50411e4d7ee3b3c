"""The live view on a real terminal (Debian's tmux): a release-shaped run fits the screen while it runs and a
no-op release prints under 15 lines; without a terminal the same run prints plain lines, no escape codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.paths import ROOT

pytestmark = pytest.mark.slow
ROWS, COLS = 40, 120


def _tmux(*args: str) -> str:
    exe = shutil.which("tmux")
    if exe is None:
        pytest.fail("Debian's tmux is not installed; run: python3 -m pipeline.machine.bootstrap")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=20, check=True).stdout


def _driver(state: Path, mode: str) -> list[str]:
    """The driver's argv, run by `env` without CI (a person's terminal, not CI)."""
    return ["env", "-u", "CI", f"PYTHONPATH={ROOT}", "TERM=xterm-256color", sys.executable, "-m",
            "tests.integration.live_view_driver", str(state), mode]


def run_in_tmux(state: Path, mode: str, *, timeout_s: float = 120) -> tuple[list[str], list[list[str]]]:
    """Run the driver in a fresh COLSxROWS tmux session; returns (every line it printed, screens seen mid-run)."""
    session = f"veza-i20-{uuid.uuid4().hex[:8]}"
    done = state / f"{mode}.done"
    cmd = " ".join(_driver(state, mode)) + f"; touch {done}; sleep 600"
    _tmux("new-session", "-d", "-s", session, "-x", str(COLS), "-y", str(ROWS), cmd)
    screens: list[list[str]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not done.exists():
            assert time.monotonic() < deadline, "the driver did not finish"
            screens.append(_tmux("capture-pane", "-p", "-t", session).splitlines())
            time.sleep(0.3)
        lines = _tmux("capture-pane", "-p", "-S", "-5000", "-t", session).splitlines()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=20)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines, screens


def test_a_cold_run_fits_the_screen_and_a_no_op_release_prints_under_15_lines(tmp_path: Path) -> None:
    lines, screens = run_in_tmux(tmp_path / "state", "cold")
    # 4 stages x 4 services x 30 tool lines were reported; the terminal got a screenful at most
    assert len(lines) <= ROWS, "\n".join(lines)
    assert not any(" line 29" in ln for ln in lines)          # tool output is in the log files, not on screen
    live = [s for s in screens if any("running" in ln and "veza-" in ln for ln in s)]
    assert live, "the live view never showed a running service"
    assert any(sum("veza-" in ln for ln in s) >= 4 for s in live)   # one line per service of the running stage
    assert any(ln.startswith("report: ") for ln in lines[-3:]) and "report.html" in "".join(lines[-3:])

    noop, _ = run_in_tmux(tmp_path / "state", "noop")
    assert len(noop) < 15, "\n".join(noop)
    stages = load_config(ROOT / "pipeline.toml", check_files=False).env("local").stages
    assert any(f"{', '.join(stages)}: resumed" in ln for ln in noop), "\n".join(noop)
    assert any(f": ok, nothing to redo ({len(stages)} stage(s) checked" in ln for ln in noop), "\n".join(noop)


def test_without_a_terminal_the_same_run_prints_plain_lines(tmp_path: Path) -> None:
    cp = subprocess.run(_driver(tmp_path / "state", "noop")[5:], capture_output=True, text=True, timeout=120,
                        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert cp.returncode == 0, cp.stderr
    assert "\x1b[" not in cp.stdout
    assert "── build" in cp.stdout and "  veza-docs: done in 0.1s" in cp.stdout
