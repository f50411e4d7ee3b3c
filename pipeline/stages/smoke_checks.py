"""The smoke test's checks against a running compose stack: each service's HTTP probes and the functional
checks it lists in pipeline.toml (`smoke_checks`, kinds in pipeline.core.config.SMOKE_CHECK_KINDS)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jwt

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



@dataclass(frozen=True)
class Stack:
    """What a check knows of the running stack: published endpoints ((compose service, container port) →
    (host, published port)), the run's id, the retry window (seconds) and the stack's compose variables
    (its per-run secrets: JWT_SECRET signs the tokens a check sends to a write endpoint)."""

    ends: dict[tuple[str, int], tuple[str, int]]
    run_id: str
    window: float
    variables: Mapping[str, str] = field(default_factory=dict)


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


def run_checks(cfg: Config, project: ComposeProject, run_id: str, window: float,
               variables: Mapping[str, str] | None = None) -> list[Check]:
    """Every service's probes and functional checks (pipeline.toml `probes`, `smoke_checks`) against the
    running stack, each retried for `window` seconds before it counts as failed. `variables`: the stack's
    compose variables (the secrets a functional check needs)."""
    ends = _endpoints(project)
    stack = Stack(ends, run_id, window, variables or {})
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
            checks.append(CHECKS[check.kind](svc, base, check.path, stack))
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


def _check_ready(svc: Service, base: str, path: str, stack: Stack) -> Check:
    """ready-json: GET path reports {"ready": true}, i.e. the service's dependencies really answered it."""

    def attempt() -> tuple[bool, str]:
        a = http("GET", base + path)
        try:
            ready = a.status == 200 and json.loads(a.body).get("ready") is True
        except (ValueError, AttributeError):
            ready = False
        return ready, a.summary()

    return _timed(svc.name, f"{path} is true (deps answer)",
                  'HTTP 200 with JSON {"ready": true}', lambda: _retry(stack.window, attempt))


def _check_nats_publish(svc: Service, base: str, path: str, stack: Stack) -> Check:
    """nats-publish: a message POSTed to the URL is observed on NATS by our own subscriber, and the service's
    own subscriber received it back from NATS (GET on the same URL lists it)."""
    token = f"smoke-{stack.run_id}-{secrets.token_hex(4)}"
    expected = f"the posted message ({token}) published on NATS and received back by the service"
    window = stack.window
    nats = stack.ends.get(("nats", 4222))
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

                def received() -> tuple[bool, str]:
                    a = http("GET", base + path)
                    try:
                        msgs = json.loads(a.body).get("messages")
                    except (ValueError, AttributeError):
                        msgs = None
                    return a.status == 200 and isinstance(msgs, list) and token in msgs, a.summary()

                back, got_back = _retry(min(window, 5.0), received)
                if not back:
                    return False, ("NATS delivered it, but the service's subscriber did not list it: "
                                   f"GET {path} {got_back}")
                return True, f"seen on NATS subject {seen[0]} and by the service's subscriber"
        except NatsError as exc:
            return False, str(exc)

    return _timed(svc.name, f"POST {path} → NATS", expected, run)


def _json_field(body: bytes, key: str) -> str:
    try:
        value = json.loads(body).get(key)
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _check_blob_roundtrip(svc: Service, base: str, path: str, stack: Stack) -> Check:
    """blob-roundtrip: PUT to path ({id} = a fresh id) then GET returns the same bytes."""
    data = secrets.token_bytes(48 * 1024)
    url = base + path.replace("{id}", f"smoke-{stack.run_id}")

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
                  lambda: _retry(stack.window, attempt))


def _check_html_index(svc: Service, base: str, path: str, stack: Stack) -> Check:
    """html-index: GET path serves an HTML page."""

    def attempt() -> tuple[bool, str]:
        a = http("GET", base + path)
        ok = a.status == 200 and "html" in a.content_type.lower() and "<html" in a.text.lower()
        return ok, a.summary() + (f", content-type {a.content_type!r}" if a.status == 200 and not ok else "")

    return _timed(svc.name, f"GET {path} serves the HTML index", "HTTP 200, text/html with <html>",
                  lambda: _retry(stack.window, attempt))


def bearer_token(secret: str, subject: str, ttl_s: int = 300) -> str:
    """An HS256 JWT for `subject`, expiring in `ttl_s` seconds: what the API's write endpoints accept
    (services/backend-api/auth.go: HS256 only, `sub` and `exp` required)."""
    now = int(time.time())
    return jwt.encode({"sub": subject, "iat": now, "exp": now + ttl_s}, secret, algorithm="HS256")


def _check_api_roundtrip(svc: Service, base: str, path: str, stack: Stack) -> Check:
    """api-roundtrip: PUT JSON {"title": …} to path ({id} = a fresh id) with a bearer token signed with the
    stack's JWT_SECRET, then GET it back (the API stores it in PostgreSQL); the same PUT without a token must
    be refused (401): the write endpoint checks tokens."""
    title = f"smoke {stack.run_id} {secrets.token_hex(4)}"
    url = base + path.replace("{id}", f"smoke-{stack.run_id}")
    expected = "unauthenticated PUT refused (401); authenticated PUT stored; GET returns the same title"
    secret = stack.variables.get("JWT_SECRET", "")
    if not secret:
        return Check(svc.name, f"PUT+GET {path} (JWT)", False, expected, "the stack has no JWT_SECRET", 0.0)
    body = json.dumps({"title": title}).encode()

    def attempt() -> tuple[bool, str]:
        anon = http("PUT", url, body=body, headers={"Content-Type": "application/json"})
        if anon.status != 401:
            return False, f"PUT without a token answered {anon.summary()}, not 401"
        put = http("PUT", url, body=body, headers={"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {bearer_token(secret, 'smoke')}"})
        if put.status != 200:
            return False, f"PUT answered {put.summary()}"
        got = http("GET", url)
        stored = _json_field(got.body, "title")
        if got.status != 200 or stored != title:
            return False, f"GET answered {got.summary()}, title {stored!r} instead of {title!r}"
        return True, "stored and read back"

    return _timed(svc.name, f"PUT+GET {path} (JWT)", expected, lambda: _retry(stack.window, attempt))


# The kinds a service lists in pipeline.toml (`smoke_checks`); see pipeline.core.config.SMOKE_CHECK_KINDS.
CHECKS: dict[str, Callable[[Service, str, str, Stack], Check]] = {
    "ready-json": _check_ready,
    "api-roundtrip": _check_api_roundtrip,
    "nats-publish": _check_nats_publish,
    "blob-roundtrip": _check_blob_roundtrip,
    "html-index": _check_html_index,
}
