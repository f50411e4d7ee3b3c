"""The one subprocess runner: timeouts, argv lists, redacted output, a clear error when a tool is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import pinned
from pipeline.core.errors import StageFailed, ToolMissing
from pipeline.core.paths import TOOLS_BIN, TOOLS_DIR
from pipeline.core.redact import redact
from pipeline.observe.tracing import tool_span


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def find_tool(name: str, fix: str | None = None) -> str:
    """Path of a tool: the project's tools dir first, then PATH. Raises ToolMissing with the fix.

    A tool pinned by hash (toolchain.lock.json `binaries`: helm, kubectl, trivy, hadolint, docker-compose…) must
    be the pinned file wherever it is found — `.tools/bin/<tool>` or, when that is missing, the PATH binary —
    else pinned.PinMismatch (exit 6): one line naming the file, the pinned and the found sha256, and the fix.
    Tools from Debian packages (docker, git, skopeo…) are not pinned here: apt checked their packages, and
    `invoke doctor` checks each file against dpkg's recorded md5sums (pipeline/tools/dpkg.py)."""
    local = TOOLS_BIN / name
    if local.exists() and os.access(local, os.X_OK):
        _check_pin(name, local)
        return str(local)
    found = shutil.which(name)
    if found:
        _check_pin(name, Path(found), on_path=True)
        return found
    raise ToolMissing(f"required tool '{name}' not found in {TOOLS_BIN} or PATH",
                      fix or "run: python3 -m pipeline.machine.bootstrap")


_verified: set[tuple[str, int, int, int]] = set()


def _check_pin(name: str, path: Path, *, on_path: bool = False) -> None:
    """A pinned tool must be the pinned file (toolchain.lock.json): pinned.PinMismatch (exit 6) otherwise.
    Checked once per process and file version; the hash itself is remembered in TOOLS_DIR's HashMemo (keyed by
    path, mtime, ctime, inode and size, as the cache checks are), so a rerun stats the file instead of reading
    it. on_path: found on PATH because `.tools/bin/<name>` is missing (the fix is the bootstrap, which installs
    the pinned file there, not deleting a file of the machine)."""
    if name not in pinned.binary_names():
        return
    real = path.resolve()
    st = real.stat()
    key = (str(real), st.st_mtime_ns, st.st_ctime_ns, st.st_size)
    if key in _verified:
        return
    pin = pinned.binary_pin(name)
    memo = pinned.HashMemo(TOOLS_DIR / "verified.json")
    found = memo.sha256(path)
    memo.save()
    if found != pin.sha256 and not on_path:
        raise pinned.mismatch(path, pin, found)
    if found != pin.sha256:
        raise pinned.PinMismatch(
            f"{path} (on PATH; {TOOLS_BIN / name} is missing): sha256 {found} is not the pinned {pin.sha256} "
            f"of {name} {pin.version} ({pin.source}; {pinned.LOCK_FILE.name})",
            f"run {pinned.BOOTSTRAP}: it installs the pinned {name} into {TOOLS_BIN}, which is used before PATH")
    _verified.add(key)


def pin_matches(name: str, path: Path) -> bool:
    """Is `path` the pinned file of tool `name` (the same check and memo as find_tool's)? False for a tool with
    no pin, or a file that cannot be read."""
    if name not in pinned.binary_names():
        return False
    try:
        _check_pin(name, path)
    except (pinned.PinMismatch, OSError):
        return False
    return True


# What a tool started with inherit=False still gets from ours: enough to find programs and a home, and the
# machine's network settings (proxies, CA bundles, package index configuration), nothing else.
BARE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "LOGNAME")
MACHINE_NETWORK_PREFIXES = ("PIP_", "UV_", "NPM_CONFIG_", "SSL_CERT_")
MACHINE_NETWORK_SUFFIXES = ("_PROXY", "_CA_BUNDLE", "_CA_CERTS", "_CAINFO")


def machine_setting(name: str) -> bool:
    """A variable that describes this machine rather than a run: BARE_ENV, or its network/TLS settings."""
    up = name.upper()
    return name in BARE_ENV or up.startswith(MACHINE_NETWORK_PREFIXES) or up.endswith(MACHINE_NETWORK_SUFFIXES)


def tool_env(extra: Mapping[str, str] | None = None, traceparent: str = "", *,
             inherit: bool = True) -> dict[str, str]:
    """The environment of a tool: ours (with inherit=False only machine_setting() names), the tools dir first on PATH,
    `extra`, and TRACEPARENT (W3C Trace Context) naming the tool call's span when the run is traced
    (pipeline.observe.tracing)."""
    env = dict(os.environ) if inherit else {k: v for k, v in os.environ.items() if machine_setting(k)}
    if traceparent:
        env["TRACEPARENT"] = traceparent
    env["PATH"] = f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', '')}"
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    what: str | None = None,
) -> Result:
    """Run argv (no shell) with a timeout; on failure raise StageFailed naming the command and its stderr."""
    args = tuple(str(a) for a in argv)
    with tool_span(args) as (traceparent, span):
        try:
            cp = subprocess.run(
                args, input=input, capture_output=True, text=True, timeout=timeout,
                env=tool_env(env, traceparent), cwd=cwd, check=False,
            )
        except FileNotFoundError as exc:
            raise ToolMissing(f"cannot run '{args[0]}': not installed",
                              "run: python3 -m pipeline.machine.bootstrap") from exc
        except subprocess.TimeoutExpired as exc:
            raise StageFailed(f"{what or args[0]} timed out after {timeout:.0f}s: {redact(' '.join(args))}") from exc
        _exit_code(span, cp.returncode)
    res = Result(args, cp.returncode, redact(cp.stdout or ""), redact(cp.stderr or ""))
    if check and not res.ok:
        tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-5:]
        raise StageFailed(f"{what or args[0]} failed (exit {res.returncode}): " + " | ".join(tail))
    return res


def run_files(argv: Sequence[str | Path], *, timeout: float, stdout_to: Path | None = None,
              stdin_from: Path | None = None, what: str | None = None) -> Result:
    """Run argv (no shell) with its stdout written to the file `stdout_to` and/or its stdin read from the file
    `stdin_from`, as bytes (a database dump is binary and may be large: it never passes through memory as text).
    Never raises on a non-zero exit: the Result's stderr (redacted) says why; its stdout is "" when it went to
    a file. StageFailed on a timeout (the partial output file is the caller's to remove)."""
    args = tuple(str(a) for a in argv)
    with tool_span(args) as (traceparent, span):
        out = stdout_to.open("wb") if stdout_to is not None else None
        inp = stdin_from.open("rb") if stdin_from is not None else None
        try:
            cp = subprocess.run(args, stdin=inp if inp is not None else subprocess.DEVNULL,
                                stdout=out if out is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                                timeout=timeout, env=tool_env(None, traceparent), check=False)
        except FileNotFoundError as exc:
            raise ToolMissing(f"cannot run '{args[0]}': not installed",
                              "run: python3 -m pipeline.machine.bootstrap") from exc
        except subprocess.TimeoutExpired as exc:
            raise StageFailed(f"{what or args[0]} timed out after {timeout:.0f}s: {redact(' '.join(args))}") from exc
        finally:
            for f in (out, inp):
                if f is not None:
                    f.close()
        _exit_code(span, cp.returncode)
    stdout = "" if out is not None else (cp.stdout or b"").decode(errors="replace")
    return Result(args, cp.returncode, redact(stdout), redact((cp.stderr or b"").decode(errors="replace")))


def stream(
    argv: Sequence[str | Path],
    *,
    timeout: float,
    on_line: Callable[[str], None],
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    stop: threading.Event | None = None,
    stop_signal: int | None = None,
    stop_grace_s: float = 0.0,
    inherit_env: bool = True,
) -> int:
    """Run argv, calling on_line for every (redacted) output line; returns the exit code.

    inherit_env=False: the tool sees only the machine's settings of our environment (machine_setting), plus
    `env` (a runner whose jobs must get exactly the variables they are given).

    The process is killed on timeout, or as soon as `stop` is set (e.g. --fail-fast, Ctrl-C). With
    `stop_signal` (e.g. signal.SIGTERM), `stop` first sends that signal and lets the process finish its own
    cleanup for up to `stop_grace_s` seconds (still within `timeout`) before it is killed.
    """
    args = [str(a) for a in argv]
    with tool_span(args) as (traceparent, span):
        rc = _stream(args, timeout, on_line, env, cwd, input, stop, traceparent, stop_signal, stop_grace_s,
                     inherit_env)
        _exit_code(span, rc)
        return rc


def _exit_code(span: Any, code: int) -> None:
    """Record a tool call's exit code on its span (OpenTelemetry semantic conventions: process.exit.code)."""
    if span is not None:
        span.set_attribute("process.exit.code", code)


def _stream(args: list[str], timeout: float, on_line: Callable[[str], None], env: Mapping[str, str] | None,
            cwd: Path | str | None, input: str | None, stop: threading.Event | None, traceparent: str,
            stop_signal: int | None = None, stop_grace_s: float = 0.0, inherit_env: bool = True) -> int:
    try:
        p = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            env=tool_env(env, traceparent, inherit=inherit_env), cwd=cwd, bufsize=1,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(f"cannot run '{args[0]}': not installed",
                          "run: python3 -m pipeline.machine.bootstrap") from exc
    deadline = threading.Event()

    def watchdog() -> None:
        # Wakes every 0.2 s: kill on timeout or when asked to stop (after the stop signal's grace, if any).
        waited = 0.0
        signalled_at: float | None = None
        while p.poll() is None and not deadline.is_set():
            stopping = stop is not None and stop.is_set()
            if stopping and stop_signal is not None and signalled_at is None:
                p.send_signal(stop_signal)
                signalled_at = waited
            grace_over = signalled_at is None or waited - signalled_at >= stop_grace_s
            if waited >= timeout or (stopping and grace_over):
                p.kill()
                return
            deadline.wait(0.2)
            waited += 0.2

    timer = threading.Thread(target=watchdog, daemon=True)
    timer.start()
    try:
        if input is not None and p.stdin:
            p.stdin.write(input)
            p.stdin.close()
        assert p.stdout is not None
        for line in p.stdout:
            on_line(redact(line.rstrip("\n")))
        return p.wait()
    finally:
        deadline.set()
        if p.poll() is None:
            p.kill()
            p.wait()
