"""The local environment's shared daemons for tests: the cluster and the machine's registry (127.0.0.1:5000).

`local_cluster` (session) returns the kubeconfig path; `machine_registry` (session) the registry's address. What
already ran before any test session (a developer's) is reused and left running; what a test session started —
the fixtures themselves, or a release under test whose push started the embedded registry — is stopped by the
last test session to end: each session holds a lease file (its PID) while it runs, so concurrent sessions never
pull a daemon from under each other. Registered in tests/conftest.py (pytest_plugins).

Loopback ports of this area: 127.0.0.1:18300-18349 (port-forwards, the test registry on 18349).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.paths import ROOT, TOOLS_BIN
from tests.ports import first_free

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


def _leases_dir(name: str) -> Path:
    from pipeline.local.cluster import layout

    return layout.STATE / "test-leases" / name


def _live_leases(name: str) -> list[Path]:
    """The leases on daemon `name` held by test sessions still running (dead sessions' leases are removed)."""
    live = []
    for lease in _leases_dir(name).glob("*"):
        if lease.name.isdigit() and Path(f"/proc/{lease.name}").exists():
            live.append(lease)
        elif lease.name.isdigit():
            lease.unlink(missing_ok=True)  # a session that died without teardown
    return live


@contextlib.contextmanager
def _leased(name: str, was_running: Callable[[], bool], stop: Callable[[], object]) -> Iterator[None]:
    """Hold this session's lease on the shared daemon `name`; the last session to end stops it when a test
    session started it.

    `was_running` is asked when the first session takes its lease; "started by tests" is kept in a marker file,
    so a daemon that a test (or a release under test) starts later in the session is stopped too.
    """
    from pipeline.local.cluster.state import cluster_lock

    leases = _leases_dir(name)
    marker, lease = leases / "started-by-tests", leases / str(os.getpid())
    with cluster_lock():
        leases.mkdir(parents=True, exist_ok=True)
        if not _live_leases(name) and not was_running():
            marker.write_text(f"{os.getpid()}\n")
        lease.write_text(f"{time.time()}\n")
    try:
        yield
    finally:
        with cluster_lock():
            lease.unlink(missing_ok=True)
            last = not _live_leases(name) and marker.is_file()
            if last:
                marker.unlink(missing_ok=True)
        if last:
            stop()


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[Path]:
    """The local cluster's kubeconfig; brings the cluster up when needed (fails, never skips, when it cannot)."""
    global _session
    from pipeline.local.cluster import cluster_down, cluster_up
    from pipeline.local.cluster.start import running_state

    if os.geteuid() != 0:
        pytest.fail("the local cluster needs root")
    with _leased("cluster", lambda: running_state() is not None, cluster_down):
        was_running = running_state() is not None
        t0 = time.monotonic()
        kubeconfig = cluster_up()
        _session = ClusterSession(kubeconfig, not was_running, time.monotonic() - t0)
        yield kubeconfig


_shared_here = 0   # this process's shared holds of the cluster (cluster_use)


@contextlib.contextmanager
def cluster_use(exclusive: bool = False) -> Iterator[None]:
    """Hold the cluster for a test: shared (tests that only deploy into their own namespaces; two cluster lanes of
    `invoke test` may run such tests at once, tests/lanes.py) or exclusive (a test that stops the cluster: it waits
    until no shared holder is left, and no shared holder starts before it ends). A file lock (flock) beside the
    cluster's state, so concurrent test sessions see it; released when the process ends."""
    import fcntl

    from pipeline.local.cluster import layout

    global _shared_here
    if exclusive and _shared_here:   # flock on another descriptor of this process would wait for ourselves
        raise RuntimeError("this test process holds the cluster shared (a cluster_parallel module is running): "
                           "a test that stops the cluster cannot run inside it")
    shared = 0 if exclusive else 1
    layout.STATE.mkdir(parents=True, exist_ok=True)
    with open(layout.STATE / "test-cluster-use.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        _shared_here += shared
        try:
            yield
        finally:
            _shared_here -= shared
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="module", autouse=True)
def _cluster_parallel_holds_the_cluster_shared(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module with a test marked `cluster_parallel` (the second cluster lane, tests/lanes.py) holds the cluster
    shared from before its module fixtures are set up until they are torn down: a test of the first lane that stops
    the cluster (cluster_to_myself) waits until the module ends. Held per test, a cluster-down between two tests
    wiped the release a module fixture had made (the canary e2e's namespace lost its Deployments midway)."""
    module = request.module
    if not any(item.get_closest_marker("cluster_parallel") is not None
               for item in request.session.items if getattr(item, "module", None) is module):
        yield
        return
    with cluster_use():
        yield


@pytest.fixture
def cluster_to_myself(local_cluster: Path) -> Iterator[Path]:
    """The local cluster, held exclusively for this test (one that stops it): see cluster_use."""
    with cluster_use(exclusive=True):
        yield local_cluster


def _machine_config() -> Config:
    return load_config(ROOT / "pipeline.toml", check_files=False)


@pytest.fixture(scope="session", autouse=True)
def _registry_lease() -> Iterator[None]:
    """Every session: a machine registry that was not running when the session began is stopped at its end,
    whoever started it (a fixture, or a release under test whose push starts the embedded registry)."""
    from pipeline.local.embedded_registry import registry_down, registry_status

    with _leased("registry", lambda: registry_status(_machine_config(), quiet=True).running,
                 lambda: registry_down(_machine_config())):
        yield


@pytest.fixture(scope="session")
def machine_registry(_registry_lease: None) -> str:
    """The machine's registry (the embedded default, 127.0.0.1:5000), started when it does not answer."""
    from pipeline.local.embedded_registry import ensure_local_registry

    cfg = _machine_config()
    ensure_local_registry(cfg)
    return cfg.registry.address


def kubectl(kubeconfig: Path, *args: str, timeout: float = 120, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                         timeout=timeout, input=input, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def delete_namespace(kubeconfig: Path, namespace: str, context: str = "", timeout_s: float = 180,
                     wait: bool = True) -> bool:
    """Delete a test's namespace and return once its name is free again (so a later test may reuse it); with
    `wait=False` (a name no later test reuses, e.g. one with a random suffix), once its deletion has begun.

    Its workload controllers are deleted first without their pods (nothing recreates a pod then), its pods at once
    (grace period 0: a test's pods hold nothing worth a graceful stop), then the namespace. Waiting out
    each pod's grace period, the kubelet's confirmations and the namespace controller's requeue on pods still
    terminating made a teardown take 50-95 s. Returns whether the name is free (with `wait=False`: whether the
    deletion began); False after `timeout_s` too: like the `kubectl delete --wait` it replaces, a teardown does
    not fail on it.
    """
    kctx = ["--context", context] if context else []
    ns = ["-n", namespace, "--ignore-not-found", "--wait=false"]
    kubectl(kubeconfig, *kctx, "delete", "deployments,replicasets,statefulsets,daemonsets,jobs", "--all",
            "--cascade=orphan", *ns, check=False)
    kubectl(kubeconfig, *kctx, "delete", "pods", "--all", "--grace-period=0", "--force", *ns, check=False)
    res = kubectl(kubeconfig, *kctx, "delete", "namespace", namespace, "--ignore-not-found", f"--wait={wait}".lower(),
                  f"--timeout={int(timeout_s)}s", timeout=timeout_s + 30, check=False)
    return res.returncode == 0


def invoke(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the project's invoke task the way a user does."""
    return subprocess.run([str(ROOT / ".venv/bin/invoke"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


def free_pf_port() -> int:
    return first_free(PF_PORTS)
