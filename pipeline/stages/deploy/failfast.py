"""Fail fast on what cannot recover while Helm waits: stop within seconds, name the object and the reason.

Helm's --wait only learns that a rollout will never finish when its --timeout (300 s) runs out. Some states
never resolve on their own during a deploy, and the Pod and PersistentVolumeClaim objects say so early:
- a pod the scheduler cannot place (PodScheduled=False, reason Unschedulable): an unbound claim, insufficient
  cpu/memory, an unmatched node selector — blocking once it persists `unschedulable_grace_s` (a claim being
  bound or a pod of the old revision going away can make it transient for a moment);
- an image that cannot be pulled: container waiting with InvalidImageName / ErrImageNeverPull (no retry changes
  them) at once; with ErrImagePull / ImagePullBackOff once it persists `pull_grace_s` — the kubelet retries those
  with back-off, and a registry restarting or a node's trust being written heals within that time. The reason
  shown is the kubelet's own pull error (its Failed event), not the back-off's "Back-off pulling image";
- a container that cannot be created from its spec (CreateContainerConfigError: a missing Secret key…),
  persisting `config_grace_s`;
- a crash loop: container waiting with CrashLoopBackOff, or restarted `crash_restarts` times;
- a dependency that refuses the pod's credentials (a wrong DB_PASSWORD, REDIS_PASSWORD or NATS user): the
  service's readiness check got an answer that waiting will not change, and its log says so in one JSON line,
  `{"msg": "not ready", "checks": {dependency: reason}, "rejected": [dependency, ...]}` (docs/services.md;
  the kubelet's probe event carries only the status code, not the /ready body).
Reasons and states: the Kubernetes API (core/v1 PodStatus, ContainerStateWaiting reasons as the kubelet
writes them, https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-states,
https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-conditions).

Only pods created after the deploy began count (pods of the previous revision are not this deploy's fault).
`find_blocker` is pure (unit-tested); `BlockerWatcher` polls the cluster beside Helm and, on the first blocker,
calls the given `on_blocker` (the deploy cancels Helm there; Helm then rolls back).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.stages.deploy.diagnosis import readiness_record, timestamp
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget

# Pull failures that no retry changes (a malformed reference; imagePullPolicy: Never without the image), and
# those the kubelet retries with back-off (10 s, 20 s, 40 s…: kubelet's image back-off) that may heal.
PULL_TERMINAL = ("InvalidImageName", "ErrImageNeverPull")
PULL_RETRIED = ("ErrImagePull", "ImagePullBackOff")
CONFIG_FAILURES = ("CreateContainerConfigError", "CreateContainerError")


@dataclass(frozen=True)
class Blocker:
    """What will not recover: the object (kind/name), a short category, the cluster's own reason text."""

    kind: str
    name: str
    category: str   # unschedulable | unbound-claim | image-pull | container-config | crash-loop | credentials-rejected
    reason: str

    def line(self) -> str:
        return f"{self.kind} {self.name}: {self.category}: {self.reason}"


@dataclass(frozen=True)
class Thresholds:
    unschedulable_grace_s: float = 10.0
    config_grace_s: float = 10.0
    pull_grace_s: float = 30.0   # two of the kubelet's pull retries (after 10 s, then 20 s of back-off)
    crash_restarts: int = 2


def waiting_blocker(container_status: Mapping[str, Any], *, age_s: float,
                    limits: Thresholds = Thresholds()) -> tuple[str, str] | None:
    """(category, reason) when a container's waiting state will not recover, judged `age_s` seconds after its pod
    was created; None = it may still start. Categories: image-pull (PULL_TERMINAL at once, PULL_RETRIED after
    `pull_grace_s`), container-config (CONFIG_FAILURES after `config_grace_s`). `container_status`: one entry of
    a Pod's status.containerStatuses / initContainerStatuses (core/v1 ContainerStatus). Shared by the deploy's
    watcher and the migrator Job's wait."""
    waiting = (container_status.get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason", ""))
    message = str(waiting.get("message", "")).strip()
    container = f"container {container_status.get('name', '?')}"
    if reason in PULL_TERMINAL or (reason in PULL_RETRIED and age_s >= limits.pull_grace_s):
        return "image-pull", f"{container}: {reason}: {message or container_status.get('image', '')}"
    if reason in CONFIG_FAILURES and age_s >= limits.config_grace_s:
        return "container-config", f"{container}: {reason}: {message}"
    return None


def pull_error(events: Sequence[kubectl.Event], pod: str) -> str:
    """The kubelet's newest pull error for `pod` (its Warning event `Failed`, "Failed to pull image …: <why>"),
    "" when there is none. The waiting state's own message after the first failure is only the back-off."""
    for ev in reversed(events):   # kubectl.events: oldest first
        if ev.kind == "Pod" and ev.name == pod and ev.reason == "Failed" \
                and ev.message.startswith("Failed to pull image"):   # not its "Error: ImagePullBackOff"
            return ev.message
    return ""


def _claims(pod: dict[str, Any]) -> list[str]:
    return [str(v["persistentVolumeClaim"].get("claimName")) for v in pod.get("spec", {}).get("volumes") or []
            if isinstance(v, dict) and isinstance(v.get("persistentVolumeClaim"), dict)]


def _claim_detail(claim: str, pvcs: dict[str, dict[str, Any]]) -> str:
    pvc = pvcs.get(claim)
    if pvc is None:
        return f"claim {claim} does not exist"
    phase = (pvc.get("status") or {}).get("phase", "?")
    cls = (pvc.get("spec") or {}).get("storageClassName")
    cls_text = repr(cls) if cls is not None else "unset, and the cluster has no default"
    return f"PersistentVolumeClaim {claim} is {phase} (storage class {cls_text})"


def rejected_credentials(log_text: str) -> str | None:
    """From a pod's recent log (one JSON object per line), the newest readiness failure that names dependencies
    which refused the credentials, as "postgres: <reason>; redis: <reason>"; None when there is none (or when
    the newest failure is no refusal: it may heal). The record: diagnosis.readiness_record."""
    rec = readiness_record(log_text)
    if rec is None or not rec[1]:
        return None
    failing, rejected = rec
    return "; ".join(f"{dep}: {failing.get(dep, 'refused').removeprefix('credentials rejected: ')}"
                     for dep in rejected)


def _unready_running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    started = [cs for cs in status.get("containerStatuses") or [] if "running" in (cs.get("state") or {})]
    return bool(started) and not any(c.get("type") == "Ready" and c.get("status") == "True"
                                     for c in status.get("conditions") or [])


def find_blocker(pods: Sequence[dict[str, Any]], pvcs: Sequence[dict[str, Any]], *, since: float, now: float,
                 limits: Thresholds = Thresholds(), logs: Mapping[str, str] | None = None) -> Blocker | None:
    """The first unrecoverable state among `pods` (Pod objects as `kubectl get -o json` lists them) created at
    or after `since` (epoch seconds), judged at `now`; `pvcs` name the claims of unschedulable pods; `logs`
    (pod name → its recent log) show a dependency refusing the credentials. None = keep waiting."""
    by_claim = {str(p.get("metadata", {}).get("name")): p for p in pvcs}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or timestamp(str(meta.get("creationTimestamp", ""))) < since - 1:
            continue
        name = str(meta.get("name", "?"))
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                    and cond.get("reason") == "Unschedulable":
                age = now - timestamp(str(cond.get("lastTransitionTime", ""))) if cond.get("lastTransitionTime") \
                    else now - timestamp(str(meta.get("creationTimestamp", "")))
                if age < limits.unschedulable_grace_s:
                    continue
                message = str(cond.get("message", "")).strip()
                if "PersistentVolumeClaim" in message:
                    detail = "; ".join(_claim_detail(c, by_claim) for c in _claims(pod)) or message
                    return Blocker("Pod", name, "unbound-claim", f"{message} — {detail}")
                return Blocker("Pod", name, "unschedulable", message or "the scheduler cannot place it")
        statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        for cs in statuses:
            found = waiting_blocker(cs, age_s=now - timestamp(str(meta.get("creationTimestamp", ""))), limits=limits)
            if found is not None:
                return Blocker("Pod", name, *found)
            reason = str(((cs.get("state") or {}).get("waiting") or {}).get("reason", ""))
            container = f"container {cs.get('name', '?')}"
            restarts = int(cs.get("restartCount") or 0)
            if reason == "CrashLoopBackOff" or restarts >= limits.crash_restarts:
                last = (cs.get("lastState") or {}).get("terminated") or {}
                how = (f"exit code {last.get('exitCode')}" + (f" ({last['reason']})" if last.get("reason") else "")
                       if last else reason or "restarting")
                return Blocker("Pod", name, "crash-loop", f"{container} restarted {restarts} time(s), last {how}")
        if _unready_running(pod) and (logs or {}).get(name):
            refused = rejected_credentials((logs or {})[name])
            if refused:
                return Blocker("Pod", name, "credentials-rejected", f"not Ready: {refused}")
    return None


class BlockerWatcher:
    """Polls the release's pods (every `period_s`) while Helm waits; calls `on_blocker` once with the first
    Blocker found. Errors of a poll (the API busy) are skipped: Helm's own timeout remains the backstop."""

    def __init__(self, target: KubeTarget, selector: str, since: float, on_blocker: Callable[[Blocker], None], *,
                 period_s: float = 2.0, limits: Thresholds = Thresholds()) -> None:
        self.target, self.selector, self.since = target, selector, since
        self.on_blocker, self.period_s, self.limits = on_blocker, period_s, limits
        self.found: Blocker | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="deploy-failfast")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def poll(self) -> Blocker | None:
        import time

        pods = kubectl.get_json(self.target, "pods", selector=self.selector, timeout=15).get("items", [])
        pvcs: list[dict[str, Any]] = []
        if any(_claims(p) for p in pods):
            pvcs = kubectl.get_json(self.target, "pvc", timeout=15).get("items", [])
        # Only this deploy's running pods that are not Ready: their log says whether a dependency refused them.
        logs = {p["metadata"]["name"]: kubectl.logs(self.target, p["metadata"]["name"], tail=20, timeout=10)
                for p in pods if _unready_running(p) and not p["metadata"].get("deletionTimestamp")
                and timestamp(str(p["metadata"].get("creationTimestamp", ""))) >= self.since - 1}
        found = find_blocker(pods, pvcs, since=self.since, now=time.time(), limits=self.limits, logs=logs)
        if found is not None and found.category == "image-pull":
            why = pull_error(kubectl.events(self.target, timeout=15), found.name)
            found = Blocker(found.kind, found.name, found.category, f"{found.reason} — {why}") if why else found
        return found

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                blocker = self.poll()
            except Exception:  # a failed poll must not end the watch: Helm's timeout remains
                continue
            if blocker is not None:
                self.found = blocker
                self.on_blocker(blocker)
                return
