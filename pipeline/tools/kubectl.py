"""kubectl adapter: typed calls for what the deploy needs (get, apply, rollout status, events, logs,
port-forward). Every call has a timeout; secrets reach kubectl on stdin, never in argv."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageFailed
from pipeline.core.redact import redact
from pipeline.tools.proc import Result, find_tool, run, run_files, tool_env

# Loopback ports kubectl port-forward may use, e.g. "18200-18299" (tests and CI runners set it to their
# allocated range). Unset: the kernel picks a free ephemeral port.
PORT_RANGE_ENV = "VEZA_PORT_FORWARD_PORTS"


@dataclass(frozen=True)
class KubeTarget:
    """Where a command goes: kubeconfig file (None: kubectl's default), context ("" = current), namespace."""

    kubeconfig: Path | None
    context: str
    namespace: str

    def args(self, *, namespaced: bool = True) -> list[str]:
        out: list[str] = []
        if self.kubeconfig:
            out += ["--kubeconfig", str(self.kubeconfig)]
        if self.context:
            out += ["--context", self.context]
        if namespaced and self.namespace:
            out += ["--namespace", self.namespace]
        return out


@dataclass(frozen=True)
class Event:
    kind: str
    name: str
    reason: str
    message: str
    type: str
    count: int
    last_seen: str

    def line(self) -> str:
        times = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.last_seen} {self.type} {self.kind}/{self.name} {self.reason}: {self.message}{times}"


def kubectl() -> str:
    return find_tool("kubectl", "run: invoke bootstrap (installs .tools/bin/kubectl)")


def _kc(target: KubeTarget, args: Sequence[str], *, timeout: float, check: bool = True,
        input: str | None = None, namespaced: bool = True, what: str | None = None) -> Result:
    return run([kubectl(), *target.args(namespaced=namespaced), *args], timeout=timeout, check=check,
               input=input, what=what or f"kubectl {args[0]}")


def server_version(target: KubeTarget, *, timeout: float = 10) -> str | None:
    """The API server's version (e.g. "v1.20.2"), or None when no cluster answers."""
    res = _kc(target, ["version", "-o", "json", f"--request-timeout={int(timeout)}s"], timeout=timeout + 5,
              check=False, namespaced=False)
    if not res.ok:
        return None
    try:
        return str(json.loads(res.stdout)["serverVersion"]["gitVersion"])
    except (ValueError, KeyError):
        return None


def get_json(target: KubeTarget, *resource: str, selector: str = "", timeout: float = 30,
             namespaced: bool = True, ignore_not_found: bool = False) -> dict[str, Any]:
    args = ["get", *resource, "-o", "json"]
    if selector:
        args += ["-l", selector]
    if ignore_not_found:
        args.append("--ignore-not-found")
    res = _kc(target, args, timeout=timeout, namespaced=namespaced, what=f"kubectl get {' '.join(resource)}")
    if not res.stdout.strip():
        return {}
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def list_json(target: KubeTarget, resource: str, *, selector: str = "", timeout: float = 10) -> dict[str, Any] | None:
    """`kubectl get RESOURCE -l SELECTOR -o json` with a request timeout, or None when no API server answers
    (the cluster is down or unreachable). Raises StageFailed when the API answers but refuses (e.g. forbidden)."""
    args = ["get", resource, "-o", "json", f"--request-timeout={max(1, int(timeout))}s"]
    if selector:
        args += ["-l", selector]
    res = _kc(target, args, timeout=timeout + 5, check=False, what=f"kubectl get {resource}")
    if res.ok:
        data: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip() else {"items": []}
        return data
    if server_version(target, timeout=min(timeout, 5)) is None:
        return None
    tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-3:]
    raise StageFailed(f"kubectl get {resource} failed (exit {res.returncode}): " + " | ".join(tail))


def apply(target: KubeTarget, manifest: str, *, timeout: float = 60, dry_run: str = "") -> Result:
    """Apply a manifest given on stdin (YAML or JSON): secrets stay out of argv."""
    args = ["apply", "-f", "-"]
    if dry_run:
        args.append(f"--dry-run={dry_run}")
    return _kc(target, args, timeout=timeout, input=manifest, what="kubectl apply")


def patch(target: KubeTarget, *resource: str, merge_patch: dict[str, Any], namespaced: bool = True,
          timeout: float = 30) -> Result:
    """`kubectl patch --type merge` of one object (raises StageFailed when kubectl fails)."""
    return _kc(target, ["patch", *resource, "--type", "merge", "-p", json.dumps(merge_patch)], timeout=timeout,
               namespaced=namespaced, what=f"kubectl patch {' '.join(resource)}")


def delete(target: KubeTarget, *resource: str, timeout: float = 120, wait: bool = True,
           namespaced: bool = True) -> Result:
    args = ["delete", *resource, "--ignore-not-found", f"--wait={'true' if wait else 'false'}"]
    return _kc(target, args, timeout=timeout, namespaced=namespaced, what=f"kubectl delete {' '.join(resource)}")


def rollout_status(target: KubeTarget, resource: str, *, timeout_s: float) -> Result:
    """`kubectl rollout status`; check=False: the caller reports the failure."""
    return _kc(target, ["rollout", "status", resource, f"--timeout={int(timeout_s)}s"], timeout=timeout_s + 15,
               check=False)


def events(target: KubeTarget, *, timeout: float = 30) -> list[Event]:
    """Events of the namespace, oldest first."""
    data = get_json(target, "events", timeout=timeout)
    out: list[Event] = []
    for item in data.get("items", []):
        obj = item.get("involvedObject", {})
        out.append(Event(
            kind=str(obj.get("kind", "")), name=str(obj.get("name", "")), reason=str(item.get("reason", "")),
            message=str(item.get("message", "")).strip(), type=str(item.get("type", "")),
            count=int(item.get("count") or 1),
            last_seen=str(item.get("lastTimestamp") or item.get("eventTime") or
                          item.get("metadata", {}).get("creationTimestamp", "")),
        ))
    out.sort(key=lambda e: e.last_seen)
    return out


def logs(target: KubeTarget, pod: str, *, container: str = "", tail: int = 40, previous: bool = False,
         timeout: float = 20) -> str:
    """The last lines of a pod's log ("" when there are none yet, e.g. the image was never pulled)."""
    args = ["logs", pod, f"--tail={tail}"]
    if container:
        args += ["-c", container]
    if previous:
        args.append("--previous")
    res = _kc(target, args, timeout=timeout, check=False, what="kubectl logs")
    return res.stdout if res.ok else ""


def exec_files(target: KubeTarget, resource: str, command: Sequence[str], *, timeout: float,
               stdout_to: Path | None = None, stdin_from: Path | None = None, container: str = "") -> Result:
    """`kubectl exec [-i] RESOURCE -- COMMAND` with its stdout streamed into the file `stdout_to` and/or its stdin
    from the file `stdin_from` (bytes: proc.run_files). The command's secrets belong in the pod's environment,
    referenced as `$VAR` inside a `sh -c` script, never in `command` itself (the argv is visible on this
    machine). Never raises on a non-zero exit (the Result says why)."""
    args = ["exec", *(["-i"] if stdin_from is not None else []), resource,
            *(["-c", container] if container else []), "--", *command]
    return run_files([kubectl(), *target.args(), *args], timeout=timeout, stdout_to=stdout_to,
                     stdin_from=stdin_from, what="kubectl exec")


def _port_candidates() -> list[int]:
    spec = os.environ.get(PORT_RANGE_ENV, "").strip()
    if not spec:
        return [0]
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def port_forward(target: KubeTarget, resource: str, remote_port: int, *,
                 ready_timeout: float = 20, lifetime: float = 600) -> Iterator[int]:
    """Forward a free loopback port to `resource` (e.g. svc/veza-docs, deploy/x) : remote_port.

    Yields the local port; the kubectl process ends when the block ends (or after `lifetime` seconds).
    The port is taken from VEZA_PORT_FORWARD_PORTS when set, else the kernel chooses it.
    """
    last_error = "no free port"
    for port in _port_candidates():
        if port and not _port_free(port):
            continue
        argv = [kubectl(), *target.args(), "port-forward", "--address", "127.0.0.1", resource,
                f"{port or ''}:{remote_port}"]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tool_env(),
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        killer = threading.Timer(lifetime, proc.kill)
        killer.start()
        try:
            local, output = _wait_forwarding(proc, ready_timeout)
            if local is None:
                text = redact("".join(output)).strip()
                last_error = text.splitlines()[-1] if text else f"no 'Forwarding' line within {ready_timeout:.0f}s"
                if "address already in use" in text:
                    continue
                raise StageFailed(f"kubectl port-forward {resource} :{remote_port} failed: {last_error}")
            yield local
            return
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    raise StageFailed(f"kubectl port-forward {resource}: {last_error}",
                      f"free a port in {os.environ.get(PORT_RANGE_ENV, 'the ephemeral range')}")


def _wait_forwarding(proc: subprocess.Popen[str], timeout: float) -> tuple[int | None, list[str]]:
    """Wait for 'Forwarding from 127.0.0.1:PORT'. A reader thread keeps draining kubectl's output
    (one line per connection) so the pipe never fills; returns (port or None, lines so far)."""
    lines: list[str] = []
    found: list[int] = []
    event = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(lines) < 200:
                lines.append(line)
            if not found and line.startswith("Forwarding from 127.0.0.1:"):
                found.append(int(line.split("127.0.0.1:", 1)[1].split()[0]))
                event.set()
        event.set()

    threading.Thread(target=reader, daemon=True).start()
    event.wait(timeout)
    return (found[0] if found else None), list(lines)
