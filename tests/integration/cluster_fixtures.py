"""The local Kubernetes cluster for integration tests: up once per session, down at the end.

`local_cluster` (session) returns the kubeconfig path. A cluster that already ran before any test session (a
developer's) is reused and left running; one a test session started is stopped by the last test session to end:
each session holds a lease file (its PID) while it runs, so concurrent sessions never pull the cluster from under
each other. Registered in tests/conftest.py (pytest_plugins): every module shares the one session fixture.

Loopback ports of this area: 127.0.0.1:18300-18349 (port-forwards, the test registry on 18349).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.paths import ROOT, TOOLS_BIN

KUBECTL = str(TOOLS_BIN / "kubectl")
PF_PORTS = range(18300, 18349)
TEST_REGISTRY_PORT = 18349


@dataclass
class ClusterSession:
    kubeconfig: Path
    started_here: bool
    up_seconds: float


_session: ClusterSession | None = None


def cluster_session() -> ClusterSession | None:
    """What local_cluster did this session (None before it ran)."""
    return _session


def _leases_dir() -> Path:
    from pipeline.local.cluster import layout

    return layout.STATE / "test-leases"


def _live_leases() -> list[Path]:
    live = []
    for lease in _leases_dir().glob("*"):
        if lease.name.isdigit() and Path(f"/proc/{lease.name}").exists():
            live.append(lease)
        elif lease.name.isdigit():
            lease.unlink(missing_ok=True)  # a session that died without teardown
    return live


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[Path]:
    """The local cluster's kubeconfig; brings the cluster up when needed (fails, never skips, when it cannot)."""
    global _session
    from pipeline.local.cluster import cluster_down, cluster_up
    from pipeline.local.cluster.start import running_state
    from pipeline.local.cluster.state import cluster_lock

    if os.geteuid() != 0:
        pytest.fail("the local cluster needs root")
    marker = _leases_dir() / "started-by-tests"
    with cluster_lock():
        _leases_dir().mkdir(parents=True, exist_ok=True)
        lease = _leases_dir() / str(os.getpid())
        lease.write_text(f"{time.time()}\n")
        was_running = running_state() is not None
    if not was_running:
        marker.write_text(f"{os.getpid()}\n")
    t0 = time.monotonic()
    kubeconfig = cluster_up()
    _session = ClusterSession(kubeconfig, not was_running, time.monotonic() - t0)
    try:
        yield kubeconfig
    finally:
        lease.unlink(missing_ok=True)
        if marker.is_file() and not _live_leases():
            marker.unlink(missing_ok=True)
            cluster_down()


def kubectl(kubeconfig: Path, *args: str, timeout: float = 120, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                         timeout=timeout, input=input, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def invoke(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the project's invoke task the way a user does."""
    return subprocess.run([str(ROOT / ".venv/bin/invoke"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


def free_pf_port() -> int:
    for p in PF_PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return p
    raise RuntimeError("no free port in 127.0.0.1:18300-18348")
