"""What a run left behind on this machine: processes, engine objects, mounts, iptables chains.

    python3 -m pipeline.machine.leftovers snapshot FILE [--no-engine]   # before the run
    python3 -m pipeline.machine.leftovers check FILE [--no-engine]      # after it: exit 1 and one line per
                                                                        # object that is new since the snapshot

`.ci/run` takes a snapshot before the suite and checks after it (engine objects while the engine still runs),
then once more, processes only, after the bootstrap stopped what it started. Standard library only, like the
bootstrap: it must run before and after the venv's tools.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Daemons the pipeline or its tests start (the local cluster, registries, port-forwards, the engine).
WATCHED = ("kube-apiserver", "kube-controller", "kube-scheduler", "kubelet", "kube-proxy", "etcd",
           "docker-registry", "registry", "socat", "dockerd", "containerd", "containerd-shim",
           "kubectl", "helm", "trivy", "docker-compose", "compose")


def _lines(argv: list[str]) -> list[str]:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in cp.stdout.splitlines() if line.strip()] if cp.returncode == 0 else []


def processes() -> list[str]:
    """`<pid> <command>` of every watched daemon running now (not this process's own children).

    A zombie is not running (it holds nothing but its PID entry until its parent reaps it): a daemon stopped
    after its starter exited is reparented to PID 1, which may reap it seconds later. As core/processes.pid_alive."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and any(comm.startswith(w[:15]) for w in WATCHED):
            out.append(f"{d.name} {comm}")
    return sorted(out)


def engine_objects() -> list[str]:
    docker = "docker"
    objs = [f"container {n}" for n in _lines([docker, "ps", "-a", "--format", "{{.Names}}"])]
    objs += [f"network {n}" for n in _lines([docker, "network", "ls", "--format", "{{.Name}}"])]
    objs += [f"volume {n}" for n in _lines([docker, "volume", "ls", "--format", "{{.Name}}"])]
    return sorted(objs)


def mounts() -> list[str]:
    try:
        text = Path("/proc/mounts").read_text()
    except OSError:
        return []
    return sorted(f"mount {line.split()[1]}" for line in text.splitlines()
                  if "kubelet" in line or "veza" in line)


def chains() -> list[str]:
    out = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat"):
            out += [f"{tool} -t {table} {line}" for line in _lines([tool, "-w", "-t", table, "-S"])
                    if line.startswith("-N KUBE-")]
    return sorted(out)


def snapshot(engine: bool) -> dict[str, list[str]]:
    snap = {"processes": processes(), "mounts": mounts(), "chains": chains()}
    if engine:
        snap["engine"] = engine_objects()
    return snap


def new_since(before: dict[str, list[str]], now: dict[str, list[str]]) -> list[str]:
    """Everything in `now` that `before` did not have, one line each, sorted."""
    return sorted(x for k, items in now.items() for x in items if x not in set(before.get(k, [])))


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("snapshot", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    cmd, path, engine = argv[0], Path(argv[1]), "--no-engine" not in argv
    if cmd == "snapshot":
        path.write_text(json.dumps(snapshot(engine), indent=1) + "\n")
        return 0
    before = json.loads(path.read_text())
    if not engine:
        before.pop("engine", None)
    left = [x for x in new_since(before, snapshot(engine)) if not x.endswith(f" {os.getpid()}")]
    for x in left:
        print(f"left behind: {x}", file=sys.stderr)
    if left:
        print(f"error: the run left {len(left)} object(s) behind (listed above)", file=sys.stderr)
        return 1
    print("leftovers: none (processes, engine objects, mounts, iptables chains)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
