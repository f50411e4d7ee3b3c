"""Functional checks: the `checks` each service lists in pipeline.toml (kinds: pipeline.core.config.CHECK_KINDS),
run against a running service, proving that data flows through it and its backend, not only that it answers.

They run in the compose smoke test (run_checks, after each service's HTTP probes) and in the deploy's verification
and `invoke verify` through port-forwards (pipeline/stages/deploy/checks.py): the same code, one `CheckTarget`
saying how each place reaches NATS and which secret signs the tokens. Every check has a negative control that a
service which only looks right fails (a token signed with another secret, an id nobody wrote, a message published
on NATS by the check itself). What a check writes carries an id starting with CHECK_ID_PREFIX and the run id
(README, "Functional checks").
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from pipeline.core.config import Config, FunctionalCheck, Probe, Service
from pipeline.local import stack_spec
from pipeline.stages.probes import HttpAnswer, NatsError, NatsSubscriber, http
from pipeline.tools.compose import ComposeProject, ContainerState

CHECK_ID_PREFIX = "pipeline-check"
CHECK_SUBJECT = "pipeline-check"   # the `sub` of the tokens a check signs (the backend records it as created_by)
NEEDS_JWT = ("api-roundtrip", "api-plays")


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

    def record(self) -> dict[str, Any]:
        """What the manifest keeps of it (a service's smoke, deploy and verify records: `checks`)."""
        return {"name": self.name, "ok": self.ok, **({} if self.ok else {"got": self.got, "expected": self.expected})}


@dataclass(frozen=True)
class CheckTarget:
    """What a check knows of where it runs: the run's id (in every id it writes), the retry window (seconds), the
    secrets it signs with (JWT_SECRET: the one the service checks tokens with) and NATS's (host, port), or None
    with the reason it cannot be reached."""

    run_id: str
    window: float
    variables: Mapping[str, str] = field(default_factory=dict)
    nats: tuple[str, int] | None = None
    nats_problem: str = "NATS port 4222 is not published"

    @property
    def data_id(self) -> str:
        """The id of what the checks of this run write: `pipeline-check-<run id>` (at most 63 characters)."""
        return f"{CHECK_ID_PREFIX}-{self.run_id}"[:63]


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
    """The smoke test's checks: every service's probes and its functional checks that run in smoke (pipeline.toml
    `probes`, `checks` with "smoke" in `in`) against the running compose stack, each retried for `window` seconds
    before it counts as failed. `variables`: the stack's compose variables (JWT_SECRET signs the tokens)."""
    ends = _endpoints(project)
    target = CheckTarget(run_id, window, variables or {}, ends.get(("nats", 4222)))
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
        checks += service_checks(svc, base, svc.checks_in("smoke"), target)
    return checks


def service_checks(svc: Service, base: str, kinds: Sequence[FunctionalCheck], target: CheckTarget) -> list[Check]:
    """Run `kinds` (FunctionalCheck entries of `svc`) against the service at `base` (http://host:port)."""
    return [CHECKS[c.kind](svc, base, c.path, target) for c in kinds]


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


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _json_field(body: bytes, key: str) -> str:
    value = _json(body).get(key)
    return value if isinstance(value, str) else ""


def _absent_id() -> str:
    """An id no run ever wrote (the negative control of a read): GET must answer that there is nothing."""
    return f"{CHECK_ID_PREFIX}-absent-{secrets.token_hex(8)}"


def _check_ready(svc: Service, base: str, path: str, t: CheckTarget) -> Check:
    """ready-json: GET path reports {"ready": true}, i.e. the service's dependencies really answered it."""

    def attempt() -> tuple[bool, str]:
        a = http("GET", base + path)
        return a.status == 200 and _json(a.body).get("ready") is True, a.summary()

    return _timed(svc.name, f"{path} is true (deps answer)",
                  'HTTP 200 with JSON {"ready": true}', lambda: _retry(t.window, attempt))


def _check_nats_publish(svc: Service, base: str, path: str, t: CheckTarget) -> Check:
    """nats-publish: a message POSTed to the URL is published on NATS (our own subscriber sees it on the subject
    the service names), the service's subscriber receives it back (GET on the URL lists it), and a message the
    check publishes on NATS itself is listed too: the service lists what NATS delivers, not what it was POSTed."""
    token = f"{t.data_id}-{secrets.token_hex(4)}"
    direct = f"{t.data_id}-direct-{secrets.token_hex(4)}"
    name = f"POST {path} → NATS"
    expected = ("the posted message published on NATS and listed by the service; a message published on NATS by "
                "the check listed too")
    if t.nats is None:
        return Check(svc.name, name, False, expected, t.nats_problem, 0.0)
    host, port = t.nats

    def listed(needle: str) -> tuple[bool, str]:
        def attempt() -> tuple[bool, str]:
            a = http("GET", base + path)
            msgs = _json(a.body).get("messages")
            return a.status == 200 and isinstance(msgs, list) and needle in msgs, a.summary()
        return _retry(min(t.window, 5.0), attempt)

    def run() -> tuple[bool, str]:
        first = http("GET", base + path)
        subject = _json_field(first.body, "subject") or ">"   # the subject the service says it lists
        try:
            with NatsSubscriber(host, port, subject, timeout=5) as sub:
                answer: list[HttpAnswer] = []

                def post() -> tuple[bool, str]:
                    answer[:] = [http("POST", base + path, body=token.encode(),
                                      headers={"Content-Type": "text/plain; charset=utf-8"})]
                    a = answer[0]
                    return 200 <= a.status < 300 and token in a.text, a.summary()

                posted, got_post = _retry(t.window, post)
                if not posted:
                    return False, f"POST {path} answered {got_post}"
                seen = sub.wait_for(token.encode(), timeout=5)
                if seen is None:
                    return False, (f"POST {path} succeeded but no message carrying it reached NATS subject "
                                   f"{subject!r} (the one GET {path} names) within 5s")
                claimed = _json_field(answer[0].body, "subject")
                if claimed and claimed != seen[0]:
                    return False, f"the service said it published on {claimed!r} but NATS delivered it on {seen[0]!r}"
                back, got_back = listed(token)
                if not back:
                    return False, ("NATS delivered it, but the service's subscriber did not list it: "
                                   f"GET {path} {got_back}")
                sub.publish(seen[0], direct.encode())
                heard, got_heard = listed(direct)
                if not heard:
                    return False, (f"a message the check published on NATS subject {seen[0]} was not listed: the "
                                   f"service does not receive from NATS (GET {path} {got_heard})")
                return True, f"seen on NATS subject {seen[0]}; the service listed it and the check's own message"
        except NatsError as exc:
            return False, str(exc)

    return _timed(svc.name, name, expected, run)


def _check_blob_roundtrip(svc: Service, base: str, path: str, t: CheckTarget) -> Check:
    """blob-roundtrip: PUT to path ({id} = the run's id) then GET returns the same bytes; GET of an id nobody
    wrote answers 404 (a service that returns the last upload whatever the id fails)."""
    data = secrets.token_bytes(48 * 1024)
    url = base + path.replace("{id}", t.data_id)
    absent = base + path.replace("{id}", _absent_id())

    def attempt() -> tuple[bool, str]:
        put = http("PUT", url, body=data, headers={"Content-Type": "application/octet-stream"})
        if not 200 <= put.status < 300:
            return False, f"PUT answered {put.summary()}"
        got = http("GET", url)
        if got.status != 200:
            return False, f"GET answered {got.summary()}"
        if got.body != data:
            return False, f"GET returned {len(got.body)} bytes that differ from the {len(data)} bytes stored"
        other = http("GET", absent)
        if other.status != 404:
            return False, f"GET of an id nobody wrote answered {other.summary()}, not 404"
        return True, f"{len(data)} bytes round-tripped"

    return _timed(svc.name, f"PUT+GET {path}", f"the same {len(data)} bytes back; an unknown id 404",
                  lambda: _retry(t.window, attempt))


def _check_html_index(svc: Service, base: str, path: str, t: CheckTarget) -> Check:
    """html-index: GET path serves an HTML page."""

    def attempt() -> tuple[bool, str]:
        a = http("GET", base + path)
        ok = a.status == 200 and "html" in a.content_type.lower() and "<html" in a.text.lower()
        return ok, a.summary() + (f", content-type {a.content_type!r}" if a.status == 200 and not ok else "")

    return _timed(svc.name, f"GET {path} serves the HTML index", "HTTP 200, text/html with <html>",
                  lambda: _retry(t.window, attempt))


def bearer_token(secret: str, subject: str, ttl_s: int = 300) -> str:
    """An HS256 JWT for `subject`, expiring in `ttl_s` seconds: what the API's write endpoints accept
    (services/backend-api/auth.go: HS256 only, `sub` and `exp` required)."""
    now = int(time.time())
    return jwt.encode({"sub": subject, "iat": now, "exp": now + ttl_s}, secret, algorithm="HS256")


def _auth_headers(secret: str, content_type: str = "application/json") -> dict[str, str]:
    return {"Content-Type": content_type, "Authorization": f"Bearer {bearer_token(secret, CHECK_SUBJECT)}"}


def _refused_writes(method: str, url: str, body: bytes) -> str:
    """'' when the write is refused (401) both without a token and with one signed by another secret."""
    plain = {"Content-Type": "application/json"}
    anon = http(method, url, body=body, headers=plain)
    if anon.status != 401:
        return f"{method} without a token answered {anon.summary()}, not 401"
    forged = http(method, url, body=body, headers=_auth_headers(secrets.token_urlsafe(32)))
    if forged.status != 401:
        return f"{method} with a token signed by another secret answered {forged.summary()}, not 401"
    return ""


def _jwt_secret(svc: Service, name: str, expected: str, t: CheckTarget) -> Check | str:
    secret = t.variables.get("JWT_SECRET", "")
    return secret or Check(svc.name, name, False, expected, "no JWT_SECRET to sign the check's tokens with", 0.0)


def _check_api_roundtrip(svc: Service, base: str, path: str, t: CheckTarget) -> Check:
    """api-roundtrip: PUT JSON {"title": …} to path ({id} = the run's id) with a bearer token signed with the
    JWT_SECRET the service checks tokens with, then GET it back with the token's subject as `created_by` (the API
    stores it in PostgreSQL). Refused (401): the same PUT without a token or with one signed by another secret.
    GET of an id nobody wrote answers 404."""
    name = f"PUT+GET {path} (JWT)"
    expected = ("PUT refused (401) unsigned and wrongly signed; signed PUT stored; GET returns the same title and "
                "created_by; an unknown id 404")
    secret = _jwt_secret(svc, name, expected, t)
    if isinstance(secret, Check):
        return secret
    title = f"{t.data_id} {secrets.token_hex(4)}"
    url = base + path.replace("{id}", t.data_id)
    body = json.dumps({"title": title}).encode()

    def attempt() -> tuple[bool, str]:
        refused = _refused_writes("PUT", url, body)
        if refused:
            return False, refused
        put = http("PUT", url, body=body, headers=_auth_headers(secret))
        if put.status != 200:
            return False, f"PUT answered {put.summary()}"
        got = http("GET", url)
        stored, by = _json_field(got.body, "title"), _json_field(got.body, "created_by")
        if got.status != 200 or stored != title:
            return False, f"GET answered {got.summary()}, title {stored!r} instead of {title!r}"
        if by != CHECK_SUBJECT:
            return False, f"GET answered created_by {by!r}, not the token's subject {CHECK_SUBJECT!r}"
        other = http("GET", base + path.replace("{id}", _absent_id()))
        if other.status != 404:
            return False, f"GET of an id nobody wrote answered {other.summary()}, not 404"
        return True, "stored and read back"

    return _timed(svc.name, name, expected, lambda: _retry(t.window, attempt))


def _plays(a: HttpAnswer) -> int | None:
    n = _json(a.body).get("plays")
    return n if a.status == 200 and isinstance(n, int) and not isinstance(n, bool) else None


def _check_api_plays(svc: Service, base: str, path: str, t: CheckTarget) -> Check:
    """api-plays: the play counter of path ({id} = the run's id; the API keeps it in Redis): two POSTs signed with
    the JWT_SECRET count exactly two more plays on GET; unsigned or wrongly signed POSTs are refused (401) and
    count nothing; an id nobody played counts 0."""
    name = f"POST+GET {path} (JWT)"
    expected = "POST refused (401) unsigned and wrongly signed; two signed POSTs count +2 on GET; an unknown id 0"
    secret = _jwt_secret(svc, name, expected, t)
    if isinstance(secret, Check):
        return secret
    url = base + path.replace("{id}", t.data_id)

    def attempt() -> tuple[bool, str]:
        before = http("GET", url)
        n0 = _plays(before)
        if n0 is None:
            return False, f"GET answered {before.summary()}, not JSON {{\"plays\": <count>}}"
        refused = _refused_writes("POST", url, b"")
        if refused:
            return False, refused
        for step in (1, 2):
            post = http("POST", url, body=b"", headers=_auth_headers(secret))
            if _plays(post) != n0 + step:
                return False, f"signed POST #{step} answered {post.summary()}, not plays {n0 + step}"
        after = http("GET", url)
        if _plays(after) != n0 + 2:
            return False, f"GET after two plays answered {after.summary()}, not plays {n0 + 2} (from {n0})"
        other = http("GET", base + path.replace("{id}", _absent_id()))
        if _plays(other) != 0:
            return False, f"GET of an id nobody played answered {other.summary()}, not plays 0"
        return True, f"counted {n0} → {n0 + 2}"

    return _timed(svc.name, name, expected, lambda: _retry(t.window, attempt))


# The kinds a service lists in pipeline.toml (`checks`); see pipeline.core.config.CHECK_KINDS.
CHECKS: dict[str, Callable[[Service, str, str, CheckTarget], Check]] = {
    "ready-json": _check_ready,
    "api-roundtrip": _check_api_roundtrip,
    "api-plays": _check_api_plays,
    "nats-publish": _check_nats_publish,
    "blob-roundtrip": _check_blob_roundtrip,
    "html-index": _check_html_index,
}
