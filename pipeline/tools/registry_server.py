"""Adapter for the registry server process: Debian's `docker-registry` binary, or the `registry:2` image.

Only this module starts or stops the server. pipeline/local/registry.py decides which path to take.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from pipeline.core.errors import StageFailed, ToolMissing
from pipeline.core.processes import pid_alive
from pipeline.tools.proc import find_tool, run, tool_env

BINARY = "docker-registry"
IMAGE = "registry:2"


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

def docker_exe() -> str:
    return find_tool("docker", "install the Docker engine: python3 -m pipeline.machine.bootstrap")


def run_container(*, name: str, port: int, host: str, config: Path, data: Path, label: str,
                  htpasswd: Path | None, tls: tuple[Path, Path] | None) -> str:
    """`docker run -d registry:2` with our config and storage mounted; returns the container id."""
    argv: list[str] = [docker_exe(), "run", "-d", "--name", name, "--label", label,
                       "-p", f"{host}:{port}:5000",
                       "-v", f"{data}:/var/lib/registry",
                       "-v", f"{config}:/etc/docker/registry/config.yml:ro"]
    if htpasswd is not None:
        argv += ["-v", f"{htpasswd}:/auth/htpasswd:ro"]
    if tls is not None:
        argv += ["-v", f"{tls[0]}:/certs/cert.pem:ro", "-v", f"{tls[1]}:/certs/key.pem:ro"]
    argv.append(IMAGE)
    res = run(argv, timeout=300, check=False, what="docker run registry:2")
    if not res.ok:
        raise ToolMissing(f"cannot start the {IMAGE} container: {res.stderr.strip().splitlines()[-1:]}",
                          "apt-get install -y docker-registry (no image needs pulling then)")
    return res.stdout.strip()


def container_running(name: str) -> bool:
    res = run([docker_exe(), "inspect", "-f", "{{.State.Running}}", name], timeout=30, check=False)
    return res.ok and res.stdout.strip() == "true"


def remove_container(name: str) -> None:
    res = run([docker_exe(), "rm", "-f", name], timeout=60, check=False)
    if not res.ok and "No such container" not in res.stderr:
        raise StageFailed(f"cannot remove registry container {name}: {res.stderr.strip()}")
