"""Why a deploy failed, in the user's terms: the release's warning events and the failing pods' last log lines."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from pipeline.core.config import Config
from pipeline.core.reporter import Reporter
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.stages.deploy.values import resource_name
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget

# A cluster without a DNS add-on (the local one) warns about it on every pod: noise for a deploy failure.
NOISE_EVENTS = ("MissingClusterDNS",)


def pod_ready(pod: dict[str, Any]) -> bool:
    """True when the pod's Ready condition is True (a Pod object as `kubectl get -o json` gives it)."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def waiting_reason(pod: dict[str, Any]) -> str:
    """Why a pod has no log: the reason its first waiting container gives (e.g. ImagePullBackOff)."""
    for cs in pod.get("status", {}).get("containerStatuses", []) or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"(no log: container waiting: {waiting.get('reason', '')} {waiting.get('message', '')})".strip()
    return "(no log output)"


def readiness_record(log_text: str) -> tuple[dict[str, str], list[str]] | None:
    """The newest readiness failure a pod logged, as (failing check → its reason, the checks that refused the
    credentials); None when its log holds none. The services' toolkit writes one JSON line per failed /ready,
    `{"msg": "not ready", "checks": {name: "ok" | reason}, "rejected": [name, ...]}` (services/*/kit:
    Service.ready, docs/services.md): the kubelet's probe event carries only the status code, not the body.
    Lines that are not JSON, or not such a record, are ignored."""
    for line in reversed(log_text.splitlines()):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict) or rec.get("msg") != "not ready":
            continue
        checks, refused = rec.get("checks"), rec.get("rejected")
        failing = {str(k): str(v) for k, v in checks.items() if v != "ok"} if isinstance(checks, dict) else {}
        rejected = [str(d) for d in refused] if isinstance(refused, list) else []
        return failing, rejected
    return None


def readiness_causes(logs: dict[str, str]) -> list[str]:
    """For each pod whose log (pod name → its recent log) ends its readiness story with a failure, one line
    "pod P not Ready: postgres: <reason>; redis: <reason>" naming every dependency its /ready check named
    (whatever the dependency and whether it refused or did not answer). Pods whose log names none are left out."""
    out = []
    for pod, text in logs.items():
        rec = readiness_record(text)
        if rec and rec[0]:
            out.append(f"pod {pod} not Ready: " + "; ".join(
                f"{dep}: {why.removeprefix('credentials rejected: ')}" for dep, why in sorted(rec[0].items())))
    return out


def helm_reason(text: str) -> str:
    """The one line of Helm's output that says why it failed (the last error line), at most 400 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("Error") or "FAILED" in ln or "failed" in ln]
    return (errs or lines or ["no output"])[-1][:400]


def timestamp(iso: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as Kubernetes writes it (0.0 when unreadable)."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class FailingPodWatcher:
    """While helm waits, keep the last log lines of the release's pods that are not Ready: with
    --atomic/--rollback-on-failure Helm deletes them on rollback, and their logs with them.
    `captured` maps pod name → its last 30 log lines (or why it has none)."""

    def __init__(self, target: KubeTarget, release: str, period_s: float = 5.0) -> None:
        self.target, self.release, self.period_s = target, release, period_s
        self.captured: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()

    def poll(self) -> None:
        """Keep the logs of the pods not Ready now (best effort: a failed poll is skipped). Called by the loop,
        and by a fail-fast that is about to cancel Helm: its rollback would delete the pods before the next poll."""
        try:
            data = kubectl.get_json(self.target, "pods", selector=f"app.kubernetes.io/instance={self.release}",
                                    timeout=15)
            for pod in data.get("items", []):
                if pod_ready(pod) or pod["metadata"].get("deletionTimestamp"):
                    continue
                name = pod["metadata"]["name"]
                text = kubectl.logs(self.target, name, tail=30, timeout=10)
                self.captured[name] = text or waiting_reason(pod)
        except Exception:  # best effort: a failed poll must not end the watch
            return


def capture_logs(rt: ReleaseTarget) -> dict[str, str]:
    """pod name → last 30 log lines (or why it has none) of every pod of the release that is not Ready."""
    out: dict[str, str] = {}
    data = kubectl.get_json(rt.kube, "pods", selector=rt.selector)
    for pod in data.get("items", []):
        if pod_ready(pod):
            continue
        name = pod["metadata"]["name"]
        out[name] = kubectl.logs(rt.kube, name, tail=30) or waiting_reason(pod)
    return out


def report_failure(cfg: Config, rt: ReleaseTarget, since: float, logs: dict[str, str], reporter: Reporter) -> None:
    """Say the warning events of the release's objects since `since` (epoch seconds, 5 s of slack) and the
    captured logs of its failing pods."""
    prefixes = tuple(resource_name(rt.release, s.name) for s in cfg.services)
    evs = [e for e in kubectl.events(rt.kube) if e.type == "Warning" and timestamp(e.last_seen) >= since - 5
           and e.name.startswith(prefixes) and e.reason not in NOISE_EVENTS]
    reporter.info("  events (warnings since the deploy started):")
    for e in evs[-15:]:
        reporter.info(f"    {e.line()}")
    if not evs:
        reporter.info("    (none)")
    for pod, text in logs.items():
        reporter.info(f"  logs of failing pod {pod}:")
        for line in (text.strip().splitlines() or ["(no output)"])[-20:]:
            reporter.info(f"    {line}")
