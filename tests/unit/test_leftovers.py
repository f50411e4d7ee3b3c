"""The leftover check counts running daemons, not zombies (a stopped daemon reparented to PID 1 may stay a zombie
for seconds until PID 1 reaps it: it holds nothing, and CI must not fail on it)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from pipeline.machine.leftovers import processes


def _named(tmp_path: Path, name: str, target: str) -> Path:
    """A copy of a system binary under a watched daemon's name (comm is the executable's file name)."""
    dest = tmp_path / name
    shutil.copy(shutil.which(target) or target, dest)
    return dest


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_running_daemon_is_listed_and_a_zombie_is_not(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "exit").mkdir()
    running = subprocess.Popen([str(_named(tmp_path / "run", "socat", "sleep")), "30"])
    exited = subprocess.Popen([str(_named(tmp_path / "exit", "socat", "true"))])  # never waited for: a zombie
    try:
        deadline = time.monotonic() + 10
        while _state(exited.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(exited.pid) == "Z"          # not reaped yet: a zombie named socat
        found = processes()
        assert f"{running.pid} socat" in found
        assert f"{exited.pid} socat" not in found
    finally:
        running.kill()
        running.wait()
        exited.wait()
