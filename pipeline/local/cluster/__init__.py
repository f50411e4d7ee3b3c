"""The Kubernetes cluster the pipeline deploys to.

An environment with a `kube_context` in pipeline.toml uses the user's cluster (kind, k3d, a real one) through
their kubeconfig; one without gets the pipeline's own local single-node cluster, built offline from Debian's
kubernetes source package (build.py) and run on 127.0.0.1 (start.py, stop.py). One local cluster per machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.kubeconfig import ClusterAccess, check_access, resolve_cluster
from pipeline.core.progress import Progress
from pipeline.local.cluster import build, layout
from pipeline.local.cluster.state import cluster_lock, load_state
from pipeline.tools.kubectl import KubeTarget

if TYPE_CHECKING:
    from pipeline.core.config import Environment

START_COMMAND = "invoke cluster-up"


def _say(line: str) -> None:
    print(line, flush=True)


def cluster_access(env: Environment) -> ClusterAccess:
    """Where `env` deploys (pipeline/core/kubeconfig.py): an external cluster's kubeconfig, checked to define the
    context, or the local cluster's kubeconfig (its current context is the local cluster)."""
    access = resolve_cluster(env, layout.KUBECONFIG)
    check_access(access)
    return access


def kube_target(env: Environment, kubeconfig: Path | None = None) -> KubeTarget:
    """The KubeTarget (kubeconfig, context, namespace) of an environment; `kubeconfig` overrides the lookup.
    UsageError (exit 2) as cluster_access."""
    if kubeconfig is not None:
        return KubeTarget(kubeconfig=kubeconfig, context=env.kube_context, namespace=env.namespace)
    access = cluster_access(env)
    return KubeTarget(kubeconfig=access.kubeconfig, context=access.context, namespace=env.namespace)


def cluster_up(env: Environment | None = None, say: Callable[[str], None] = _say,
               progress: Progress | None = None) -> Path:
    """Use the environment's external cluster (cluster_access: kubeconfig_env, kube_context), or bring up the
    local cluster (idempotent; env None = the local cluster). Returns the kubeconfig. UsageError (exit 2, one
    line) when the external kubeconfig cannot be read or lacks the context.

    The local node trusts `env`'s registry CA (registry_trust.node_trusts; UsageError, exit 2, on a bad CA file).

    say: observations, results and errors (already running, not running, external cluster, a failed start being
    undone); with `progress`
    (pipeline.core.progress: `reporter_progress(reporter, "cluster")`), the long work — building the binaries
    (~8 min from cold), starting the components — is one updating piece each (start.START_PIECE,
    build.BUILD_PIECE), ending with its result; without it, every step is a said line."""
    access = cluster_access(env) if env is not None else None
    if access is not None and access.external:
        say(f"cluster: environment '{env.name if env else ''}' uses {access.describe()}; nothing to provision")
        return access.kubeconfig
    from pipeline.local.cluster.start import START_PIECE, running_state, start_local
    from pipeline.local.cluster.stop import ran_since_last_stop, stop_local

    with cluster_lock():
        running = running_state()
        if running:
            say(f"cluster: already running since {running.started_at} — kubeconfig: {running.kubeconfig}")
            _node_trusts(env, say)
            return layout.KUBECONFIG
        if ran_since_last_stop():
            say("cluster: cleaning up after a previous run that did not stop cleanly")
            stop_local(say)
        try:
            say("cluster: not running; starting it")   # an observation worth a line: the world is not the journal
            start_local(say, progress)
        except BaseException as exc:
            if progress:
                progress(START_PIECE, f"failed: {exc}"[:300], "failed")
            say("cluster: start failed; undoing what was started (logs kept in " + str(layout.LOGS) + ")")
            stop_local(say)
            raise
        _node_trusts(env, say)
    return layout.KUBECONFIG


def _node_trusts(env: Environment | None, say: Callable[[str], None]) -> None:
    """The local node trusts the CA of `env`'s registry (registry_trust.py), when it names one."""
    from pipeline.local.cluster.registry_trust import node_trusts

    written = node_trusts(env) if env is not None else None
    if written is not None and env is not None:
        say(f"cluster: the node trusts {env.name}'s registry {env.registry} with {env.registry_ca_file} ({written})")


def cluster_down() -> None:
    """Stop the local cluster and restore the machine; safe when nothing runs. Raises when traces remain."""
    from pipeline.core.errors import StageFailed
    from pipeline.local.cluster.stop import ran_since_last_stop, stop_local

    with cluster_lock():
        had = ran_since_last_stop()
        problems = stop_local(_say)
    if problems:
        raise StageFailed("cluster-down left traces: " + "; ".join(problems),
                          "run invoke cluster-down again; see " + str(layout.LOGS))
    _say("cluster: stopped; the machine is as before" if had else "cluster: not running; nothing to stop")


def cluster_state() -> dict[str, Any]:
    """For doctor/status: running or not, the version, the kubeconfig, and how to start it."""
    from pipeline.local.cluster.start import running_state
    from pipeline.tools import daemon

    s = running_state()
    rec = load_state()
    cached = build.cached_binaries()
    info: dict[str, Any] = {
        "running": s is not None, "kubeconfig": str(layout.KUBECONFIG), "start": START_COMMAND,
        "version": f"v{layout.K8S_VERSION}", "binaries": str(cached) if cached else "not built yet",
        "state_dir": str(layout.STATE),
    }
    if rec:
        info["since"] = rec.started_at
        info["ready_after_s"] = rec.ready_after_s
        info["processes"] = {d.name: {"pid": d.pid, "alive": daemon.alive(d)} for d in rec.daemons}
        if s is None:
            info["start"] = f"{START_COMMAND} (a previous run is partly down: it cleans up first)"
    return info


def cluster_status() -> None:
    """Print what runs, since when, the versions and where the kubeconfig is."""
    from pipeline.local.cluster.api import ApiClient
    from pipeline.local.cluster.pki import Pki

    info = cluster_state()
    if not info.get("processes"):
        _say(f"cluster: not running (start it with: {info['start']}); binaries: {info['binaries']}")
        return
    state = "running" if info["running"] else "DEGRADED"
    ready = info.get("ready_after_s")
    _say(f"cluster: {state} since {info['since']} ({f'ready after {ready}s' if ready else 'starting'}), "
         f"Kubernetes {info['version']}")
    for name, p in info["processes"].items():
        _say(f"  {name:<24} pid {p['pid']:<8} {'running' if p['alive'] else 'NOT RUNNING'}")
    if info["running"]:
        api = ApiClient(Pki(layout.PKI))
        node = api.get(f"/api/v1/nodes/{layout.NODE_NAME}") or {}
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        kubelet_v = node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "?")
        runtime = node.get("status", {}).get("nodeInfo", {}).get("containerRuntimeVersion", "?")
        _say(f"  apiserver {api.version() or '?'} · node {layout.NODE_NAME} Ready={conds.get('Ready', '?')} "
             f"kubelet {kubelet_v} runtime {runtime}")
    _say(f"  kubeconfig: {info['kubeconfig']}  (logs: {layout.LOGS})")
