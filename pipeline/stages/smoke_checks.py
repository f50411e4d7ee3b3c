"""The smoke test's checks against a running compose stack: each service's HTTP probes and the functional
checks it lists in pipeline.toml (`smoke_checks`, kinds in pipeline.core.config.SMOKE_CHECK_KINDS)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Config, Probe, Service
from pipeline.local import stack_spec
from pipeline.stages.probes import HttpAnswer, NatsError, NatsSubscriber, http
from pipeline.tools.compose import ComposeProject, ContainerState


@dataclass
class Check:
    service: str
    name: str
    ok: bool
    expected: str
    got: str
    duration_s: float

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"  {mark} {self.service:<20} {self.name:<34} {self.got if not self.ok else ''}".rstrip()



def _endpoints(project: ComposeProject) -> dict[tuple[str, int], tuple[str, int]]:
    """(compose service, container port) → (host, published port), read once from `compose ps`."""
    out: dict[tuple[str, int], tuple[str, int]] = {}
    for s in project.ps():
        for target, host, published in s.publishers:
            if published:
                out[(s.service, target)] = (host or "127.0.0.1", published)
    return out


def _retry(window: float, attempt: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    deadline = time.monotonic() + window
    while True:
        ok, got = attempt()
        if ok or time.monotonic() >= deadline:
            return ok, got
        time.sleep(0.3)


def run_checks(cfg: Config, project: ComposeProject, run_id: str, window: float) -> list[Check]:
    """Every service's probes and functional checks (pipeline.toml `probes`, `smoke_checks`) against the
    running stack, each retried for `window` seconds before it counts as failed."""
    ends = _endpoints(project)
    checks: list[Check] = []
    for svc in cfg.services:
        key = (stack_spec.compose_service(svc.name), svc.port)
        if key not in ends:
            states: list[ContainerState] = project.ps()
            checks.append(Check(svc.name, f"port {svc.port}", False, "a published port",
                                f"not published (containers: {[(s.service, s.state) for s in states]})", 0.0))
            continue
        host, port = ends[key]
        base = f"http://{host}:{port}"
        for probe in svc.probes:
            checks.append(_probe(svc, base, probe, window))
        for check in svc.smoke_checks:
            checks.append(CHECKS[check.kind](svc, base, check.path, ends, run_id, window))
    return checks


def _timed(service: str, name: str, expected: str, fn: Callable[[], tuple[bool, str]]) -> Check:
    t0 = time.monotonic()
    ok, got = fn()
    return Check(service, name, ok, expected, got, round(time.monotonic() - t0, 3))


def _probe(svc: Service, base: str, p: Probe, window: float) -> Check:
    expected = f"HTTP {p.status}" + (f" with body containing {p.body_contains!r}" if p.body_contains else "")

    def attempt() -> tuple[bool, str]:
        a = http(p.method, base + p.path)
        ok = a.status == p.status and (p.body_contains in a.text if p.body_contains else True)
        return ok, a.summary()

    return _timed(svc.name, f"{p.method} {p.path}", expected, lambda: _retry(window, attempt))


def _check_ready(svc: Service, base: str, path: str, _ends: Any, _run_id: str, window: float) -> Check:
    """ready-json: GET path reports {"ready": true}, i.e. the service's dependencies really answered it."""

    def attempt() -> tuple[bool, str]:
        a = http("GET", base + path)
        try:
            ready = a.status == 200 and json.loads(a.body).get("ready") is True
        except (ValueError, AttributeError):
            ready = False
        return ready, a.summary()

    return _timed(svc.name, f"{path} is true (deps answer)",
                  'HTTP 200 with JSON {"ready": true}', lambda: _retry(window, attempt))


def _check_nats_publish(svc: Service, base: str, path: str, ends: dict[tuple[str, int], tuple[str, int]],
                        run_id: str, window: float) -> Check:
    """nats-publish: a message POSTed to the URL is observed on NATS by our own subscriber."""
    token = f"smoke-{run_id}-{secrets.token_hex(4)}"
    expected = f"the posted message ({token}) published on NATS"
    nats = ends.get(("nats", 4222))
    if nats is None:
        return Check(svc.name, f"POST {path} → NATS", False, expected, "NATS port 4222 is not published", 0.0)

    def run() -> tuple[bool, str]:
        try:
            with NatsSubscriber(nats[0], nats[1], ">", timeout=5) as sub:
                answer: list[HttpAnswer] = []

                def post() -> tuple[bool, str]:
                    answer[:] = [http("POST", base + path, body=token.encode(),
                                      headers={"Content-Type": "text/plain; charset=utf-8"})]
                    a = answer[0]
                    return 200 <= a.status < 300 and token in a.text, a.summary()

                posted, got_post = _retry(window, post)
                if not posted:
                    return False, f"POST {path} answered {got_post}"
                seen = sub.wait_for(token.encode(), timeout=5)
                if seen is None:
                    return False, "POST /messages succeeded but no message carrying it reached NATS within 5s"
                claimed = _json_field(answer[0].body, "subject")
                if claimed and claimed != seen[0]:
                    return False, f"chat-server said it published on {claimed!r} but NATS delivered it on {seen[0]!r}"
                return True, f"seen on NATS subject {seen[0]}"
        except NatsError as exc:
            return False, str(exc)

    return _timed(svc.name, f"POST {path} → NATS", expected, run)


def _json_field(body: bytes, key: str) -> str:
    try:
        value = json.loads(body).get(key)
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _check_blob_roundtrip(svc: Service, base: str, path: str, _ends: Any, run_id: str, window: float) -> Check:
    """blob-roundtrip: PUT to path ({id} = a fresh id) then GET returns the same bytes."""
    data = secrets.token_bytes(48 * 1024)
    url = base + path.replace("{id}", f"smoke-{run_id}")

    def attempt() -> tuple[bool, str]:
        put = http("PUT", url, body=data, headers={"Content-Type": "application/octet-stream"})
        if not 200 <= put.status < 300:
            return False, f"PUT answered {put.summary()}"
        got = http("GET", url)
        if got.status != 200:
            return False, f"GET answered {got.summary()}"
        if got.body != data:
            return False, f"GET returned {len(got.body)} bytes that differ from the {len(data)} bytes stored"
        return True, f"{len(data)} bytes round-tripped"

    return _timed(svc.name, f"PUT+GET {path}", f"the same {len(data)} bytes back",
                  lambda: _retry(window, attempt))


def _check_html_index(svc: Service, base: str, path: str, _ends: Any, _run_id: str, window: float) -> Check:
    """html-index: GET path serves an HTML page."""

    def attempt() -> tuple[bool, str]:
        a = http("GET", base + path)
        ok = a.status == 200 and "html" in a.content_type.lower() and "<html" in a.text.lower()
        return ok, a.summary() + (f", content-type {a.content_type!r}" if a.status == 200 and not ok else "")

    return _timed(svc.name, f"GET {path} serves the HTML index", "HTTP 200, text/html with <html>",
                  lambda: _retry(window, attempt))


# The kinds a service lists in pipeline.toml (`smoke_checks`); see pipeline.core.config.SMOKE_CHECK_KINDS.
CHECKS: dict[str, Callable[[Service, str, str, dict[tuple[str, int], tuple[str, int]], str, float], Check]] = {
    "ready-json": _check_ready,
    "nats-publish": _check_nats_publish,
    "blob-roundtrip": _check_blob_roundtrip,
    "html-index": _check_html_index,
}
