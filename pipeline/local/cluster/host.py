"""The machine-level traces of a running cluster, pure Python: the sysctls the kubelet and kube-proxy change
(recorded before start, restored after stop), the node name's /etc/hosts entry, and the kubelet's mounts."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from pipeline.local.cluster import layout

# What the kubelet (vm/kernel) and kube-proxy (net) set on start; recorded only when present.
SYSCTLS = (
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.ipv4.ip_forward",
    "net.netfilter.nf_conntrack_max",
)
HOSTS = Path("/etc/hosts")
HOSTS_LINE = f"127.0.0.1 {layout.NODE_NAME}  # veza-pipeline local cluster"


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        try:
            values[name] = _sysctl_path(name).read_text().strip()
        except OSError:
            continue
    return values


def record_sysctls() -> dict[str, str]:
    """Record the values found before start, unless a record exists (a crashed run: keep the true originals)."""
    if layout.SYSCTL_BEFORE.is_file():
        return dict(json.loads(layout.SYSCTL_BEFORE.read_text()))
    values = read_sysctls()
    layout.SYSCTL_BEFORE.write_text(json.dumps(values, indent=2) + "\n")
    return values


def changed_sysctls() -> dict[str, tuple[str, str]]:
    """name → (before, now) for each recorded sysctl whose value differs now."""
    if not layout.SYSCTL_BEFORE.is_file():
        return {}
    before: dict[str, str] = json.loads(layout.SYSCTL_BEFORE.read_text())
    now = read_sysctls()
    return {k: (v, now[k]) for k, v in before.items() if k in now and now[k] != v}


def restore_sysctls() -> tuple[list[str], list[str]]:
    """Put back every recorded value that changed; the record is removed once all are restored."""
    restored, failed = [], []
    for name, (before, now) in changed_sysctls().items():
        try:
            _sysctl_path(name).write_text(before + "\n")
            restored.append(f"{name} {now} -> {before}")
        except OSError as exc:
            failed.append(f"{name}: {exc.strerror}")
    if not failed:
        layout.SYSCTL_BEFORE.unlink(missing_ok=True)
    return restored, failed


def node_resolves_locally() -> bool:
    try:
        return socket.gethostbyname(layout.NODE_NAME) == "127.0.0.1"
    except OSError:
        return False


def ensure_hosts_entry() -> bool:
    """Make the node name resolve to 127.0.0.1 (the kubelet needs it); True when we added the line."""
    if node_resolves_locally():
        return False
    text = HOSTS.read_text() if HOSTS.exists() else ""
    if not text.endswith("\n") and text:
        text += "\n"
    # Rewrite in place (not rename): /etc/hosts may be a bind mount.
    HOSTS.write_text(text + HOSTS_LINE + "\n")
    layout.HOSTS_MARK.write_text(HOSTS_LINE + "\n")
    return True


def remove_hosts_entry() -> bool:
    """Remove our /etc/hosts line, only if we added it."""
    if not layout.HOSTS_MARK.is_file():
        return False
    lines = HOSTS.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if ln.rstrip("\n") != HOSTS_LINE]
    if len(kept) != len(lines):
        HOSTS.write_text("".join(kept))
    layout.HOSTS_MARK.unlink(missing_ok=True)
    return len(kept) != len(lines)


def kubelet_mounts(root: Path | None = None, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below the kubelet root dir, deepest first."""
    found = []
    prefix = str(root or layout.KUBELET_ROOT)
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    for line in text.splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


CGROUP_ROOT = Path("/sys/fs/cgroup")


def kubepods_cgroups(root: Path = CGROUP_ROOT) -> list[Path]:
    """The kubelet's QoS cgroup trees (kubepods, on every v1 hierarchy, or at the v2 root)."""
    return sorted(p for p in [*root.glob("*/kubepods"), *root.glob("*/kubepods.slice"), root / "kubepods"]
                  if p.is_dir())


def remove_kubepods_cgroups(root: Path = CGROUP_ROOT) -> list[str]:
    """rmdir the kubelet's cgroups, deepest first (only empty cgroups go: a process inside keeps its cgroup).
    Returns the trees that could not be removed."""
    left = []
    for tree in kubepods_cgroups(root):
        dirs = sorted((Path(d) for d, _s, _f in os.walk(tree)), key=lambda p: -len(p.parts))
        for d in dirs:
            try:
                d.rmdir()
            except OSError:
                pass
        if tree.exists():
            left.append(str(tree))
    return left
