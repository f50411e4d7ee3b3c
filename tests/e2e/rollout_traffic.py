"""Reads and writes to every serving pod of a Deployment while it rolls out, each pod through its own port-forward on
loopback, so both the old and the new version really get traffic.

Why one port-forward per pod: `kubectl port-forward svc/X` resolves the Service to one pod when it starts and pins it
(it never follows the Service's endpoints), so during a rollout it reaches only the old pod until that pod goes, then
breaks. Here a poller lists the Deployment's pods every POLL_S; a pod gets traffic from when it is Ready (when the
Service's endpoints would add it) until the API marks it for deletion (when they would drop it). Bounds: at most `rps`
requests per second per pod, `max_requests` in all, each with load.REQUEST_TIMEOUT_S; the target is a loopback port-
forward (load.check_loopback).

Every answer is recorded with its pod, that pod's image, and when it was sent. `unexplained()` is what a rollout must
not show: any 5xx, and any request that got no answer (status 0) other than those sent to a pod after its drain delay
(`drain_s`, the chart's shutdownDelaySeconds) from when its deletion began (its deletionTimestamp less
deletionGracePeriodSeconds: the API sets the timestamp to the end of the grace period; 1 s resolution) — then the pod
is shutting down and its port-forward ends with it — and those after which a new port-forward to the same pod got an
answer at once: kubectl's tunnel broke (kubectl port-forward ends on the first failed stream), the pod was serving. A
pod's container restart is no excuse: the test checks that the pods' restart counts stay 0.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from pipeline.stages.deploy.diagnosis import pod_ready, timestamp
from pipeline.stages.deploy.load import REQUEST_TIMEOUT_S, check_loopback
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget

POLL_S = 0.5
MAX_RECONNECTS = 3


@dataclass(frozen=True)
class Answer:
    pod: str
    image: str
    method: str
    path: str
    status: int          # 0: no answer
    sent: float          # epoch seconds
    body: str = ""


@dataclass
class PodTraffic:
    """Bounded PUT/GET traffic to /api/v1/tracks/<prefix>-<n> on every serving pod of `selector`."""

    target: KubeTarget
    selector: str
    port: int
    token: str
    prefix: str
    rps: float = 4.0
    max_requests: int = 2000
    # The chart's shutdownDelaySeconds: a pod serves for this long after its deletion began (its /ready says
    # draining, the rest answers), so a request sent within it must be answered; 0 = no drain promised.
    drain_s: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    deleting: dict[str, float] = field(default_factory=dict)   # pod → when its deletion began (epoch s)
    written: list[str] = field(default_factory=list)          # ids whose PUT answered 200
    restarts: dict[str, int] = field(default_factory=dict)    # pod → the highest container restart count seen

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, threading.Thread] = {}
        self._gone: dict[str, threading.Event] = {}
        self._poller = threading.Thread(target=self._poll, daemon=True, name="pod-traffic")

    def __enter__(self) -> PodTraffic:
        self._poller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._poller.join(timeout=10)
        for t in list(self._workers.values()):
            t.join(timeout=REQUEST_TIMEOUT_S + 25)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                pods = kubectl.get_json(self.target, "pods", selector=self.selector, timeout=10).get("items", [])
            except Exception:   # the API busy for a moment: the next poll sees the pods
                pods = []
            for pod in pods:
                name = pod["metadata"]["name"]
                self.restarts[name] = max([self.restarts.get(name, 0), *(
                    int(cs.get("restartCount") or 0) for cs in pod.get("status", {}).get("containerStatuses") or [])])
                deleted = pod["metadata"].get("deletionTimestamp")
                if deleted:
                    # deletionTimestamp is when the grace period ends; the deletion (SIGTERM) began that long before
                    grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
                    with self._lock:
                        self.deleting.setdefault(name, timestamp(deleted) - grace)
                    if name in self._gone:
                        self._gone[name].set()
                elif pod_ready(pod) and name not in self._workers:
                    image = pod["spec"]["containers"][0]["image"]
                    self._gone[name] = threading.Event()
                    self._workers[name] = threading.Thread(target=self._serve, args=(name, image), daemon=True)
                    self._workers[name].start()
            self._stop.wait(POLL_S)

    def _serve(self, pod: str, image: str) -> None:
        """Traffic to one pod until it goes; a request without an answer ends its port-forward and opens a new
        one (kubectl's tunnel, not the pod, may be what broke), at most MAX_RECONNECTS times per pod."""
        gone = self._gone[pod]
        n = 0

        def done() -> bool:
            return self._stop.is_set() or gone.is_set() or len(self.answers) >= self.max_requests

        for _ in range(MAX_RECONNECTS + 1):
            if done():
                return
            try:
                with kubectl.port_forward(self.target, f"pod/{pod}", self.port, lifetime=900) as local:
                    base = f"http://127.0.0.1:{local}"
                    check_loopback(base)
                    while not done():
                        n += 1
                        if n % 2:
                            tid = f"{self.prefix}-{pod[-5:]}-{n}"
                            body = json.dumps({"title": f"rollout {tid}", "genre": "rollout"}).encode()
                            ans = self._send(pod, image, base, "PUT", f"/api/v1/tracks/{tid}", body)
                            if ans.status == 200:
                                with self._lock:
                                    self.written.append(tid)
                        else:
                            with self._lock:   # read back what any pod wrote last
                                tid = self.written[-1] if self.written else f"{self.prefix}-none"
                            ans = self._send(pod, image, base, "GET", f"/api/v1/tracks/{tid}", None)
                        if ans.status == 0:
                            break   # a new tunnel; the next answer tells whether the pod was serving
                        gone.wait(1.0 / self.rps)
            except Exception as exc:   # the port-forward could not start: recorded as no answer
                self._record(Answer(pod, image, "PORT-FORWARD", str(exc)[:200], 0, time.time()))

    def _send(self, pod: str, image: str, base: str, method: str, path: str, body: bytes | None) -> Answer:
        sent = time.time()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"} if body else {}
        req = urllib.request.Request(base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
                ans = Answer(pod, image, method, path, int(resp.status), sent, resp.read(2000).decode(errors="replace"))
        except urllib.error.HTTPError as exc:
            ans = Answer(pod, image, method, path, int(exc.code), sent, exc.read(2000).decode(errors="replace"))
        except OSError as exc:
            ans = Answer(pod, image, method, path, 0, sent, str(exc))
        self._record(ans)
        return ans

    def _record(self, ans: Answer) -> None:
        with self._lock:
            self.answers.append(ans)

    # -- what was seen
    def by_image(self) -> dict[str, dict[int, int]]:
        """image → {status: count}."""
        out: dict[str, dict[int, int]] = {}
        for a in self.answers:
            out.setdefault(a.image, {}).setdefault(a.status, 0)
            out[a.image][a.status] += 1
        return out

    def unexplained(self) -> list[Answer]:
        """Every 5xx, and every request without an answer that neither explains: its pod's deletion had begun
        (`deleting`, 1 s resolution), or the tunnel broke — the next request to the same pod, through a
        new port-forward, answered below 500 (the pod was serving all along)."""
        bad = []
        for i, a in enumerate(self.answers):
            if a.status >= 500:
                bad.append(a)
            elif a.status == 0:
                deleting = self._after_drain(a)
                after = next((b for b in self.answers[i + 1:] if b.pod == a.pod), None)
                tunnel = after is not None and 0 < after.status < 500
                if not (deleting or tunnel):
                    bad.append(a)
        return bad

    def reconnects(self) -> list[Answer]:
        """The requests without an answer that the tunnel's breaking explains (unexplained() says which)."""
        bad = self.unexplained()
        return [a for a in self.answers if a.status == 0 and a not in bad
                and not self._after_drain(a)]

    def _after_drain(self, a: Answer) -> bool:
        """Whether `a` was sent once its pod may have stopped serving: at or after its deletion began plus the
        drain delay (the recorded start is truncated to 1 s, so never later than the real one: a request before
        start + drain_s was inside the delay); without a drain, from 1 s before the recorded start."""
        if a.pod not in self.deleting:
            return False
        start = self.deleting[a.pod]
        return a.sent >= (start + self.drain_s if self.drain_s else start - 1.0)

    def summary(self) -> dict[str, Any]:
        return {"by_image": self.by_image(), "deleting": self.deleting, "requests": len(self.answers),
                "restarts": self.restarts,
                "reconnects": [a.__dict__ for a in self.reconnects()[:10]],
                "unexplained": [a.__dict__ for a in self.unexplained()[:10]]}
