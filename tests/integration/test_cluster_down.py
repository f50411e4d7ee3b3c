"""`invoke cluster-down` puts the machine back: no process, container, mount, KUBE-* chain or changed sysctl
remains, and a second cluster-down exits 0. The cluster is brought back up afterwards (warm start, timed), so
tests that run later in the session still have it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.local.cluster import build, host, layout
from pipeline.local.cluster.start import RELAY
from pipeline.local.cluster.state import load_state
from pipeline.tools import daemon, netfilter
from tests.integration.cluster_fixtures import invoke, kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.engine, pytest.mark.slow]

WARM_START_TARGET_S = 30.0


def _our_processes() -> list[int]:
    from pipeline.local.cluster.stop import _stray_pids

    return _stray_pids(layout.ETCD_DATA)


def _kube_containers(docker_client: object) -> list[str]:
    import docker

    assert isinstance(docker_client, docker.DockerClient)
    found = docker_client.containers.list(all=True, filters={"label": "io.kubernetes.docker.type"})
    found += docker_client.containers.list(all=True, filters={"name": "^/k8s_"})
    return sorted({c.name for c in found})


def _state_mounts() -> list[str]:
    return [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if ln.split()[4].startswith(str(layout.STATE))]


def test_cluster_down_leaves_no_trace_and_is_idempotent(cluster_to_myself: Path, docker_client: object,
                                                        run_id: str) -> None:
    local_cluster = cluster_to_myself  # no other test uses the cluster while this one stops it
    # A pod with a secret volume (the service account token: a tmpfs mount under the kubelet root).
    kubectl(local_cluster, "run", f"sleeper-{run_id}", f"--image={layout.PAUSE_IMAGE}", "--image-pull-policy=Never",
            "--restart=Never")
    kubectl(local_cluster, "wait", "--for=condition=Ready", f"pod/sleeper-{run_id}", "--timeout=90s", timeout=120)
    kubectl(local_cluster, "create", "service", "clusterip", f"svc-{run_id}", "--tcp=80:8080")

    # Before: the traces the test then expects gone really exist (else the test could not fail).
    state = load_state()
    assert state is not None and sorted(d.name for d in state.daemons) == sorted([   # the relay is stopped too
        "etcd", "kube-apiserver", RELAY, "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"])
    assert all(daemon.alive(d) for d in state.daemons)
    assert _kube_containers(docker_client)
    assert _state_mounts()
    assert netfilter.kube_chains_left()
    assert host.kubepods_cgroups()
    recorded = json.loads(layout.SYSCTL_BEFORE.read_text())
    assert recorded and host.changed_sysctls()  # the kubelet changes some (vm.overcommit_memory, kernel.panic...)
    hosts_added = layout.HOSTS_MARK.is_file()

    res = invoke("cluster-down")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stopped" in res.stdout

    assert not any(daemon.alive(d) for d in state.daemons)
    assert _our_processes() == []
    assert _kube_containers(docker_client) == []
    assert _state_mounts() == []
    assert netfilter.kube_chains_left() == []
    assert host.kubepods_cgroups() == []
    now = host.read_sysctls()
    assert {k: v for k, v in recorded.items() if now.get(k) != v} == {}
    assert not layout.SYSCTL_BEFORE.exists() and not layout.STATE_FILE.exists()
    if hosts_added:
        assert host.HOSTS_LINE not in host.HOSTS.read_text()

    again = invoke("cluster-down")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "not running" in again.stdout

    status = invoke("cluster-status")
    assert status.returncode == 0 and "not running" in status.stdout

    # Warm start (binaries cached): back to a Ready node for the rest of the session.
    assert build.cached_binaries() is not None
    t0 = time.monotonic()
    up = invoke("cluster-up")
    took = time.monotonic() - t0
    assert up.returncode == 0, up.stdout + up.stderr
    assert "Ready" in up.stdout
    nodes = json.loads(kubectl(local_cluster, "get", "nodes", "-o", "json").stdout)
    assert [n["metadata"]["name"] for n in nodes["items"]] == [layout.NODE_NAME]
    print(f"warm start via invoke cluster-up: {took:.1f}s")
    assert took < WARM_START_TARGET_S * 2, f"warm start took {took:.1f}s"
