"""The bounded request loop that gives a rollout's analysis traffic to judge, so a quiet service is not judged on
silence (issue 29: "load during analysis").

Bounds, each enforced here rather than trusted to the caller:
- the target is loopback only (127.0.0.0/8 or ::1: the local end of a `kubectl port-forward`), never a pod or
  cluster address; anything else is a UsageError before one request is sent;
- at most `rps` requests per second (the rollout table caps it at config_rollout.MAX_RPS) and at most
  `max_requests` in all, whatever the duration; each request times out after REQUEST_TIMEOUT_S.
What it sent is counted by status code (0 = no answer) and returned as a LoadRecord for the report.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pipeline.core.config_rollout import Load
from pipeline.core.errors import UsageError

REQUEST_TIMEOUT_S = 2.0


@dataclass
class LoadRecord:
    """What one loop sent: target base URL, requests sent, answers by HTTP status (0: no answer), seconds."""

    target: str
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "requests": self.requests, "duration_s": round(self.duration_s, 2),
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())}}


def check_loopback(base_url: str) -> None:
    """UsageError unless `base_url` is http(s) to a loopback address literal (127.0.0.0/8, ::1)."""
    parts = urlsplit(base_url)
    try:
        loopback = parts.scheme in ("http", "https") and ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"the rollout's load targets {base_url!r}, which is not a loopback address",
                         "send load only through a port-forward bound to 127.0.0.1")


class LoadLoop:
    """GET `load.paths` in turn on `base_url` at `load.rps` in a background thread, from start() until stop()
    or `load.max_requests` requests. Use as a context manager: the record is complete when the block ends."""

    def __init__(self, base_url: str, load: Load) -> None:
        check_loopback(base_url)
        self.base_url, self.load = base_url.rstrip("/"), load
        self.record = LoadRecord(self.base_url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-load", daemon=True)

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadRecord:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=REQUEST_TIMEOUT_S + 1)
        return self.record

    def _run(self) -> None:
        period = 1.0 / self.load.rps
        started = time.monotonic()
        i = 0
        while not self._stop.is_set() and self.record.requests < self.load.max_requests:
            path = self.load.paths[i % len(self.load.paths)]
            self.record.by_status[_get(self.base_url + path)] += 1
            self.record.requests += 1
            i += 1
            self.record.duration_s = time.monotonic() - started
            # paced from the start, so a slow answer does not raise the rate afterwards
            self._stop.wait(max(0.0, started + i * period - time.monotonic()))
        self.record.duration_s = time.monotonic() - started


def _get(url: str) -> int:
    """The HTTP status of a GET of `url` (0 when nothing answered within REQUEST_TIMEOUT_S)."""
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0
