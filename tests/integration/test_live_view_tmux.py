"""The live view on a real terminal (Debian's tmux): a release-shaped run fits the screen while it runs and a
no-op release prints under 15 lines; without a terminal the same run prints plain lines, no escape codes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.paths import ROOT
from tests.integration.live_view_driver import PROBE_PARENT

pytestmark = pytest.mark.slow
ROWS, COLS = 40, 120


def _tmux(socket: str, *args: str) -> str:
    """tmux on a private server (`-L socket`): other sessions on the machine cannot change its options or sizes."""
    exe = shutil.which("tmux")
    if exe is None:
        pytest.fail("Debian's tmux is not installed; run: python3 -m pipeline.machine.bootstrap --tests")
    return subprocess.run([exe, "-L", socket, *args], capture_output=True, text=True, timeout=20, check=True).stdout


def _driver(state: Path, mode: str, *extra: str) -> list[str]:
    """The driver's argv, run by `env` without CI (a person's terminal, not CI) and without the COLUMNS/LINES that
    pytest's environment carries (80x24: rich would believe them over the tmux pane's real size)."""
    return ["env", "-u", "CI", "-u", "COLUMNS", "-u", "LINES", f"PYTHONPATH={ROOT}", "TERM=xterm-256color",
            sys.executable, "-m", "tests.integration.live_view_driver", str(state), mode, *extra]


def _without_terminal(argv: list[str]) -> list[str]:
    """The driver's argv without the `env …` prefix: run with the test's environment (CI, if set, kept)."""
    return argv[argv.index(sys.executable):]


def run_in_tmux(state: Path, mode: str, *extra: str, timeout_s: float = 120) -> tuple[list[str], list[list[str]]]:
    """Run the driver in a fresh COLSxROWS tmux session; returns (every line it printed, screens seen mid-run)."""
    session = socket = f"veza-i20-{uuid.uuid4().hex[:8]}"
    done = state / f"{mode}.done"
    cmd = " ".join(_driver(state, mode, *extra)) + f"; touch {done}; sleep 600"
    _tmux(socket, "new-session", "-d", "-s", session, "-x", str(COLS), "-y", str(ROWS), cmd)
    socket_path = Path(_tmux(socket, "display-message", "-p", "#{socket_path}").strip())
    screens: list[list[str]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not done.exists():
            last = "\n".join(screens[-1]) if screens else "(nothing captured)"
            assert time.monotonic() < deadline, f"the driver did not finish in {timeout_s:.0f}s; its screen:\n{last}"
            screens.append(_tmux(socket, "capture-pane", "-p", "-t", session).splitlines())
            time.sleep(0.3)
        lines = _tmux(socket, "capture-pane", "-p", "-S", "-5000", "-t", session).splitlines()
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=20)
        socket_path.unlink(missing_ok=True)   # tmux leaves its socket file behind
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
    before, after = stages[:stages.index("verify-images")], stages[stages.index("verify-images") + 1:]
    assert any(f"{', '.join(before)}: resumed" in ln for ln in noop), "\n".join(noop)
    assert any(ln.startswith("✓ verify-images ok") for ln in noop), "\n".join(noop)   # a check runs again
    assert any(f"{', '.join(after)}: resumed" in ln for ln in noop), "\n".join(noop)
    flat = "".join(noop)   # a line longer than the pane wraps
    assert re.search(rf": ok, nothing to redo \({len(stages)} stage\(s\) checked against the world in [\d.]+s; "
                     r"verify-images verified again\)", flat), "\n".join(noop)
    assert not any("never taken from the record" in ln for ln in noop), "\n".join(noop)


def test_without_a_terminal_the_same_run_prints_plain_lines(tmp_path: Path) -> None:
    cp = subprocess.run(_without_terminal(_driver(tmp_path / "state", "noop")), capture_output=True, text=True,
                        timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert cp.returncode == 0, cp.stderr
    assert "\x1b[" not in cp.stdout
    assert "── build" in cp.stdout and "  veza-docs: done in 0.1s" in cp.stdout


@pytest.fixture
def probe_image() -> Iterator[str]:
    """A private, unique name for the base image the pre-flight builds; removed afterwards."""
    ref = f"veza-i20b-test/probe:{uuid.uuid4().hex[:12]}"
    if subprocess.run(["docker", "image", "inspect", PROBE_PARENT], capture_output=True, timeout=30).returncode:
        pytest.fail(f"the local Debian base {PROBE_PARENT} is missing; run: invoke bases")
    yield ref
    subprocess.run(["docker", "image", "rm", "-f", ref], capture_output=True, timeout=60)


def test_long_work_in_the_pre_flight_is_one_live_line_and_the_run_fits_the_screen(tmp_path: Path,
                                                                                   probe_image: str) -> None:
    lines, screens = run_in_tmux(tmp_path / "state", "cold-bases", probe_image, timeout_s=300)
    assert len(lines) <= ROWS, "\n".join(lines)              # nothing scrolled off the screen
    rows = [ln for s in screens for ln in s if re.search(r"\bprobe\s+running\s", ln)]
    assert rows, "the live view never showed the base being built"
    elapsed = [float(m.group(1)) for ln in rows if (m := re.search(r"running\s+(\d+\.\d)s\s", ln))]
    assert elapsed and max(elapsed) >= 5.0, rows               # its elapsed time counts up (the build takes ~10 s)
    assert any("probe step" in ln for ln in rows), rows        # and its last step shows
    assert sum(1 for s in screens for ln in s if "probe" in ln and "running" in ln) >= 3
    assert not any("probe step" in ln for ln in lines)        # the build's output is not left on the screen
    assert any(ln.startswith(f"✓ bases: probe — built {probe_image} ") for ln in lines), "\n".join(lines)
    # the cluster build's ~60 heartbeats update one line: its step, how long against the expected, what it did last
    build = [ln for s in screens for ln in s if re.search(r"kubernetes build\s+running\s+\d+\.\ds\s+\[\d/6\] ", ln)]
    assert any(re.search(r"\[\d/6\] \w+ \d+s of ~1s expected: \d+ packages", ln) for ln in build), build
    assert not any("packages compiled" in ln for ln in lines)
    assert any(ln.startswith("✓ cluster: kubernetes build — built in 6s (replay)") for ln in lines), "\n".join(lines)
    assert any(ln.startswith("report: ") for ln in lines[-3:]), "\n".join(lines)


def test_without_a_terminal_long_work_prints_its_start_and_result_not_its_heartbeat(tmp_path: Path,
                                                                                    probe_image: str) -> None:
    argv = _without_terminal(_driver(tmp_path / "state", "cold-bases", probe_image))
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert cp.returncode == 0, cp.stderr
    assert "\x1b[" not in cp.stdout
    probe = [ln for ln in cp.stdout.splitlines() if ln.startswith("bases: probe: ")]
    # under a minute of work: the first step and the result, none of its ten steps' lines
    assert probe[0] == f"bases: probe: building {probe_image}" and len(probe) == 2, cp.stdout
    assert probe[1].startswith(f"bases: probe: built {probe_image} "), cp.stdout
    cluster = [ln for ln in cp.stdout.splitlines() if ln.startswith("cluster: ")]
    assert cluster[0].startswith("cluster: kubernetes build: [1/6] tools: build tools"), cp.stdout
    assert cluster[-1] == "cluster: kubernetes build: built in 6s (replay): no binaries written", cp.stdout
    assert len(cluster) == 2, cp.stdout                  # 6 s of replayed build: no heartbeat line in a minute
