"""cluster-down for the local cluster: put the machine back as it was before cluster-up.

Order: delete the workloads (the kubelet unmounts their volumes while it still runs), stop every recorded
process by PID (then strays of our own binaries), remove the containers the kubelet made, unmount what is left
under the kubelet root, remove the KUBE-* iptables chains, restore the changed sysctls, remove the /etc/hosts
entry if cluster-up added it. Every step is idempotent: safe twice, and after a crash.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.local.cluster import host, layout
from pipeline.local.cluster.api import ApiClient
from pipeline.local.cluster.pki import Pki
from pipeline.local.cluster.registry_trust import forget_all
from pipeline.local.cluster.state import clear_state, load_state
from pipeline.tools import daemon, docker, mount, netfilter

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Stop the node side first, the store last.
STOP_ORDER = ("apiserver-relay", "kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager",
              "kube-apiserver", "etcd")
# Dirs the kubelet may create outside its root; removed on down only when absent before up.
KUBELET_SIDE_DIRS = ("/var/log/pods", "/var/log/containers", "/var/lib/kubelet", "/var/lib/dockershim")
RELAY_LISTEN = f"TCP4-LISTEN:{layout.API_PORT},bind=".encode()
PATHS_BEFORE = layout.STATE / "paths-before.json"
KUBE_CONTAINER_LABEL = "io.kubernetes.docker.type"  # dockershim labels every sandbox and container with it


def record_paths() -> None:
    if not PATHS_BEFORE.is_file():
        PATHS_BEFORE.write_text(json.dumps({p: Path(p).exists() for p in KUBELET_SIDE_DIRS}) + "\n")


def delete_workloads(api: ApiClient, say: Callable[[str], None], timeout: float = 60) -> int:
    """Delete user namespaces, controllers and pods; wait until the node runs no pod. Returns pods seen."""
    nss = api.get("/api/v1/namespaces") or {"items": []}
    for ns in nss["items"]:
        name = ns["metadata"]["name"]
        if name not in SYSTEM_NAMESPACES:
            api.delete(f"/api/v1/namespaces/{name}")
    for ns in ("default", "kube-system"):
        for coll in ("apis/apps/v1/{ns}/deployments", "apis/apps/v1/{ns}/statefulsets",
                     "apis/apps/v1/{ns}/daemonsets", "apis/apps/v1/{ns}/replicasets", "apis/batch/v1/{ns}/jobs"):
            api.delete("/" + coll.format(ns=f"namespaces/{ns}"))
    pods = api.get("/api/v1/pods") or {"items": []}
    seen = len(pods["items"])
    if seen:
        for ns in {p["metadata"]["namespace"] for p in pods["items"]}:
            api.delete(f"/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=2")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = api.get("/api/v1/pods")
            if left is None or not left["items"]:
                break
            time.sleep(0.5)
        say(f"cluster: deleted the workloads ({seen} pods)")
    return seen


def _stray_pids(etcd_data: Path) -> list[int]:
    """Processes of our own binaries not in the record (a crashed cluster-up that lost state.json)."""
    pids: list[int] = []
    for bindir in layout.BUILD_ROOT.glob("*/bin"):
        for exe in bindir.iterdir():
            pids += daemon.processes_running(exe)
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                cmd = (proc_dir / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"/etcd") and str(etcd_data).encode() in cmd:
                pids.append(int(proc_dir.name))
            # the apiserver relay (components.apiserver_relay), recognised by its exact listen argument
            if cmd and cmd[0].endswith(b"/socat") and any(a.startswith(RELAY_LISTEN) for a in cmd):
                pids.append(int(proc_dir.name))
    return sorted(set(pids))


def ran_since_last_stop() -> bool:
    """Evidence that our cluster ran since the last clean stop (a record, or our binaries running). Without it,
    KUBE-* chains and kubelet containers on this machine belong to someone else's Kubernetes: left alone."""
    return (load_state() is not None or layout.SYSCTL_BEFORE.is_file() or PATHS_BEFORE.is_file()
            or bool(_stray_pids(layout.ETCD_DATA)))


def stop_local(say: Callable[[str], None] = print) -> list[str]:
    """Tear the local cluster down; returns the problems left (empty: the machine is as before)."""
    problems: list[str] = []
    state = load_state()
    if not ran_since_last_stop():
        return []
    by_name = {d.name: d for d in (state.daemons if state else [])}
    api_up = all(n in by_name and daemon.alive(by_name[n]) for n in ("kube-apiserver", "kubelet"))
    if api_up and (layout.PKI / "tokens.csv").is_file():
        try:
            delete_workloads(ApiClient(Pki(layout.PKI)), say)
        except Exception as exc:
            say(f"cluster: could not delete workloads through the API ({exc}); removing containers directly")

    for name in STOP_ORDER:
        d = by_name.get(name)
        if d and daemon.stop(d):
            say(f"cluster: stopped {name} (pid {d.pid})")
    for pid in _stray_pids(layout.ETCD_DATA):
        if daemon.stop(daemon.Daemon("stray", pid, 0, "")):
            say(f"cluster: stopped a stray cluster process (pid {pid})")

    removed = _remove_kube_containers()
    if removed:
        say(f"cluster: removed {removed} kubelet containers")

    for _round in range(3):
        mounts = host.kubelet_mounts()
        if not mounts:
            break
        for m in mounts:
            mount.umount(m, lazy=_round == 2)
    if host.kubelet_mounts():
        problems.append(f"mounts left under {layout.KUBELET_ROOT}: {', '.join(host.kubelet_mounts())}")

    cg_left = host.remove_kubepods_cgroups()
    if cg_left:
        problems.append(f"kubelet cgroups left (a process still inside?): {', '.join(cg_left[:3])}")

    gone = netfilter.remove_kube_rules()
    if gone:
        say(f"cluster: removed {sum(1 for g in gone if ' -X ' in g)} KUBE-* iptables chains")
    left = netfilter.kube_chains_left()
    if left:
        problems.append(f"KUBE-* chains left: {', '.join(left[:5])}")

    restored, failed = host.restore_sysctls()
    for r in restored:
        say(f"cluster: sysctl restored {r}")
    problems += [f"sysctl not restored: {f}" for f in failed]

    for path in forget_all():
        say(f"cluster: removed the node's registry trust {path}")

    if host.remove_hosts_entry():
        say(f"cluster: removed the {layout.NODE_NAME} entry from /etc/hosts")

    if not host.kubelet_mounts():
        for leftover in (layout.KUBELET_ROOT, layout.DOCKERSHIM_ROOT, layout.RUN, layout.ETCD_DATA):
            shutil.rmtree(leftover, ignore_errors=True)
        if PATHS_BEFORE.is_file():
            before = json.loads(PATHS_BEFORE.read_text())
            for p, existed in before.items():
                if not existed and Path(p).is_dir():
                    shutil.rmtree(p, ignore_errors=True)
            PATHS_BEFORE.unlink()
    if not problems:
        clear_state()
    return problems


def _remove_kube_containers() -> int:
    try:
        c = docker.client()
    except Exception:
        return 0
    found = c.containers.list(all=True, filters={"label": KUBE_CONTAINER_LABEL})
    found += [x for x in c.containers.list(all=True, filters={"name": "^/k8s_"}) if x not in found]
    n = 0
    for ctr in found:
        try:
            ctr.remove(force=True, v=True)
            n += 1
        except Exception:
            pass
    return n
