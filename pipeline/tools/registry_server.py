"""Adapter for the registry server process: Debian's `docker-registry` binary (never a `registry:2` container:
an image pulled by a mutable tag).

Only this module starts or stops the server. pipeline/local/registry.py decides which path to take.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from pipeline.core.errors import ToolMissing
from pipeline.core.processes import pid_alive
from pipeline.tools.proc import find_tool, tool_env

BINARY = "docker-registry"


def binary_path() -> str | None:
    """The docker-registry binary, or None when it is not installed."""
    try:
        return find_tool(BINARY)
    except ToolMissing:
        return None


def spawn_binary(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `docker-registry serve CONFIG` detached from our session (it outlives `invoke registry-up`)."""
    exe = binary_path()
    if exe is None:
        raise ToolMissing(f"'{BINARY}' is not installed", "apt-get install -y docker-registry")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [exe, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=tool_env(), start_new_session=True, close_fds=True,
        )


def pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: only the pid given (a registry this module started)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect our own child if it exited (no zombie); harmless for a pid that is not our child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# -- the container path (where `docker-registry` is missing but images can be pulled)
