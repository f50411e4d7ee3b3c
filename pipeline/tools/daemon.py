"""Long-running background processes (the local cluster's components): start detached with the output in a
log file, identify by PID + kernel start time (a recycled PID is never mistaken for ours), stop by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import ToolMissing
from pipeline.tools.proc import tool_env


@dataclass(frozen=True)
class Daemon:
    name: str
    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat: identifies this process among PID reuses
    argv0: str


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start ticks) of a process, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def start(name: str, argv: Sequence[str | Path], *, log: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> Daemon:
    """Start argv in its own session (it outlives the caller), stdout+stderr appended to log."""
    args = [str(a) for a in argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(args)}\n".encode())
        fh.flush()
        try:
            p = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=tool_env(env),
                cwd=cwd, start_new_session=True, close_fds=True,
            )
        except FileNotFoundError as exc:
            raise ToolMissing(f"cannot run '{args[0]}': not found", "run: invoke cluster-up (it builds it)") from exc
    st = _stat(p.pid)
    # Detach the Popen object: the daemon is tracked by PID from now on (and reaped in alive()/stop()).
    p.returncode = 0
    return Daemon(name, p.pid, st[1] if st else 0, args[0])


def alive(d: Daemon) -> bool:
    st = _stat(d.pid)
    if st is None:
        return False
    if st[0] in ("Z", "X"):
        _reap(d.pid)
        return False
    return d.start_ticks == 0 or st[1] == d.start_ticks


def stop(d: Daemon, *, grace_s: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after grace_s. True when it was running (and is now stopped)."""
    if not alive(d):
        return False
    try:
        os.kill(d.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not alive(d):
            return True
        time.sleep(0.1)
    try:
        os.kill(d.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while alive(d) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def processes_running(executable: Path) -> list[int]:
    """PIDs of live processes whose executable is the given file (finds strays a crashed run left)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        if exe == str(executable):
            st = _stat(int(entry.name))
            if st and st[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found
