"""The functional checks against small HTTP services on loopback that each do one part of the job wrongly: a check
passes only on the service that really does it (tokens checked with the secret, data kept per id, counts per
track), and its failure names what it saw. Before the negative controls, every cheating service here passed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from pipeline.core.config import Config, FunctionalCheck, Service, load_config
from pipeline.core.errors import ConfigError
from pipeline.stages.functional_checks import CHECK_SUBJECT, CheckTarget, service_checks
from tests.ports import PortPool
from tests.unit import test_config

SECRET = "k" * 32
PORTS = PortPool(range(21100, 21150))   # this test area's loopback ports


class FakeBackend:
    """The API's contract (services/backend-api/main.go) in memory, with switches for one wrong behaviour each."""

    def __init__(self, *, any_token: bool = False, ignore_id: bool = False, constant_plays: bool = False,
                 global_plays: bool = False, no_creator: bool = False) -> None:
        self.any_token, self.ignore_id, self.constant_plays = any_token, ignore_id, constant_plays
        self.global_plays, self.no_creator = global_plays, no_creator
        self.tracks: dict[str, dict[str, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.plays: dict[str, int] = {}
        self.last: Any = None

    def subject(self, headers: Any) -> str | None:
        h = headers.get("Authorization", "")
        if not h.startswith("Bearer "):
            return None
        if self.any_token:
            return "someone"
        try:
            return str(jwt.decode(h[7:], SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})["sub"])
        except jwt.PyJWTError:
            return None


def _serve(fake: FakeBackend) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_a: Any) -> None:
            pass

        def reply(self, code: int, body: Any, ctype: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def handle_any(self) -> None:
            parts = self.path.strip("/").split("/")
            data = self.body() if self.command in ("PUT", "POST") else b""
            if parts[0] == "streams":
                key = "x" if fake.ignore_id else parts[1]
                if self.command == "PUT":
                    fake.blobs[key] = data
                    return self.reply(201, {"id": parts[1]})
                return (self.reply(200, fake.blobs[key], "application/octet-stream") if key in fake.blobs
                        else self.reply(404, {"error": "no such stream"}))
            tid = parts[3]
            key = "x" if fake.ignore_id or (fake.global_plays and len(parts) == 5) else tid
            who = fake.subject(self.headers) if self.command != "GET" else ""
            if who is None:
                return self.reply(401, {"error": "token refused"})
            if len(parts) == 5:   # /api/v1/tracks/{id}/plays
                if self.command == "POST" and not fake.constant_plays:
                    fake.plays[key] = fake.plays.get(key, 0) + 1
                return self.reply(200, {"track": tid, "plays": 1 if fake.constant_plays else fake.plays.get(key, 0)})
            if self.command == "PUT":
                fake.tracks[key] = {"id": tid, "title": json.loads(data)["title"],
                                    "created_by": "" if fake.no_creator else who}
                return self.reply(200, fake.tracks[key])
            return self.reply(200, fake.tracks[key]) if key in fake.tracks else self.reply(404, {"error": "none"})

        do_GET = do_PUT = do_POST = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", PORTS.take()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


SVC = Service(name="veza-backend-api", context=None, dockerfile=None, repository="r", port=8080,  # type: ignore[arg-type]
              health_path="/health", ready_path="/ready", depends_on=(), bases=(), probes=())
TARGET = CheckTarget("run-1", 0.5, {"JWT_SECRET": SECRET})


def _run(fake: FakeBackend, kind: str, path: str, target: CheckTarget = TARGET) -> tuple[bool, str]:
    gen = _serve(fake)
    base = next(gen)
    try:
        [c] = service_checks(SVC, base, [FunctionalCheck(kind, path)], target)
    finally:
        gen.close()
    return c.ok, c.got


TRACK, PLAYS, BLOB = "/api/v1/tracks/{id}", "/api/v1/tracks/{id}/plays", "/streams/{id}"


def test_the_honest_service_passes_every_check_and_what_it_wrote_is_marked() -> None:
    fake = FakeBackend()
    for kind, path in (("api-roundtrip", TRACK), ("api-plays", PLAYS), ("blob-roundtrip", BLOB)):
        ok, got = _run(fake, kind, path)
        assert ok, (kind, got)
    assert set(fake.tracks) == {"pipeline-check-run-1"} and set(fake.blobs) == {"pipeline-check-run-1"}
    assert fake.tracks["pipeline-check-run-1"]["created_by"] == CHECK_SUBJECT
    assert fake.plays == {"pipeline-check-run-1": 2}


@pytest.mark.parametrize(("fake", "kind", "path", "said"), [
    (FakeBackend(any_token=True), "api-roundtrip", TRACK,
     "PUT with a token signed by another secret answered HTTP 200"),
    (FakeBackend(any_token=True), "api-plays", PLAYS, "POST with a token signed by another secret answered HTTP 200"),
    (FakeBackend(ignore_id=True), "api-roundtrip", TRACK, "GET of an id nobody wrote answered HTTP 200"),
    (FakeBackend(no_creator=True), "api-roundtrip", TRACK, "created_by '', not the token's subject"),
    (FakeBackend(constant_plays=True), "api-plays", PLAYS, "signed POST #1 answered HTTP 200"),
    (FakeBackend(global_plays=True), "api-plays", PLAYS, "GET of an id nobody played answered HTTP 200"),
    (FakeBackend(ignore_id=True), "blob-roundtrip", BLOB, "GET of an id nobody wrote answered HTTP 200"),
], ids=["unchecked-token-put", "unchecked-token-play", "one-row-for-every-id", "creator-not-kept",
        "plays-not-counted", "plays-not-per-track", "one-blob-for-every-id"])
def test_a_service_that_does_one_part_wrongly_fails_the_check_naming_it(fake: FakeBackend, kind: str, path: str,
                                                                        said: str) -> None:
    ok, got = _run(fake, kind, path)
    assert not ok
    assert said in got, got


def test_the_write_checks_fail_clearly_without_the_secret_the_service_checks_tokens_with() -> None:
    ok, got = _run(FakeBackend(), "api-roundtrip", TRACK, CheckTarget("run-1", 0.2, {}))
    assert not ok and got == "no JWT_SECRET to sign the check's tokens with"
    ok, got = _run(FakeBackend(), "api-plays", PLAYS, CheckTarget("run-1", 0.2, {"JWT_SECRET": "w" * 32}))
    assert not ok and "signed POST #1 answered HTTP 401" in got


def test_nats_publish_without_a_reachable_nats_fails_with_the_reason() -> None:
    ok, got = _run(FakeBackend(), "nats-publish", "/messages?room=x",
                   CheckTarget("run-1", 0.2, {}, None, "NATS at nats:4222 did not answer"))
    assert not ok and got == "NATS at nats:4222 did not answer"


# ---------------------------------------------------------------- pipeline.toml: `checks`, `in`, verify_checks

API_PROBES = 'probes = [{ method = "GET", path = "/health", status = 200, body_contains = "ok" }]'


project = test_config.project   # the fixture: test_config's project files


def _config(project: Path, service_line: str, env_line: str = "") -> Config:
    text = test_config.VALID.replace(API_PROBES, f"{API_PROBES}\n{service_line}")
    text = text.replace('scan_threshold = "HIGH"', f'scan_threshold = "HIGH"\n{env_line}')
    (project / "pipeline.toml").write_text(text)
    return load_config(project / "pipeline.toml")


def test_checks_run_in_smoke_and_verify_unless_in_says_otherwise(project: Path) -> None:
    api = _config(project, 'checks = [{ kind = "api-roundtrip", path = "/t/{id}" }, '
                           '{ kind = "ready-json", path = "/ready", in = ["smoke"] }]').service("api")
    assert [c.kind for c in api.checks_in("smoke")] == ["api-roundtrip", "ready-json"]
    assert [c.kind for c in api.checks_in("verify")] == ["api-roundtrip"]


def test_read_only_verify_keeps_the_checks_that_write_nothing(project: Path) -> None:
    cfg = _config(project, 'checks = [{ kind = "api-plays", path = "/t/{id}/plays" }, '
                           '{ kind = "ready-json", path = "/ready" }]', 'verify_checks = "read-only"')
    prod, api = cfg.env("prod"), cfg.service("api")
    assert prod.verify_checks == "read-only" and cfg.env("dev").verify_checks == "all"
    assert [c.kind for c in api.checks_in("verify", prod.verify_checks)] == ["ready-json"]
    assert api.checks_in("verify", "none") == ()


def test_the_older_smoke_checks_still_load_and_mean_smoke_only(project: Path) -> None:
    api = _config(project, 'smoke_checks = [{ kind = "html-index", path = "/" }]').service("api")
    assert [c.kind for c in api.checks_in("smoke")] == ["html-index"] and api.checks_in("verify") == ()


@pytest.mark.parametrize(("line", "expected"), [
    ('smoke_checks = [{ kind = "html-index", path = "/" }]\nchecks = [{ kind = "ready-json", path = "/ready" }]',
     "pipeline.toml: services[0].smoke_checks: given with `checks`: `smoke_checks` is the older spelling of "
     "`checks` (fix: move its entries into `checks` with in = [\"smoke\"] (or no `in`: smoke and verify))"),
    ('checks = [{ kind = "ready-json", path = "/ready", in = ["deploy"] }]',
     "pipeline.toml: services[0].checks[0].in: 'deploy' is not allowed (fix: use items from: smoke, verify)"),
    ('checks = [{ kind = "ready-json", path = "/ready", in = [] }]',
     "pipeline.toml: services[0].checks[0].in: is empty (fix: list where the check runs: smoke, verify (or "
     "remove it))"),
    ('checks = [{ kind = "redis-ping", path = "/" }]',
     "pipeline.toml: services[0].checks[0].kind: 'redis-ping' is not allowed (fix: use one of: ready-json, "
     "api-roundtrip, api-plays, nats-publish, blob-roundtrip, html-index)"),
], ids=["both-spellings", "unknown-place", "no-place", "unknown-kind"])
def test_a_wrong_checks_entry_is_one_line_naming_the_key(project: Path, line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(project, line)
    assert info.value.exit_code == 2 and info.value.one_line() == expected


def test_verify_checks_takes_only_its_modes(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _config(project, "", 'verify_checks = "some"')
    assert "environments.prod.verify_checks: 'some' is not allowed (fix: use one of: all, read-only, none)" \
        in info.value.one_line()


# ---------------------------------------------------------------- the manifest and the report

def test_each_places_checks_are_recorded_and_the_report_shows_those_after_the_deploy(tmp_path: Path) -> None:
    from pipeline.core.manifest import Manifest
    from pipeline.release.report import _service_row, markdown

    m = Manifest.new(tmp_path / "manifest.json", env="dev", release_id="dev-abcdef1", version={"sha": "a" * 40})
    m.set_service("api", repository="r/api", tags=["t"], input_digest="sha256:" + "1" * 64)
    ok = {"name": "PUT+GET /t/{id} (JWT)", "ok": True}
    bad = {"name": "POST+GET /t/{id}/plays (JWT)", "ok": False, "got": "signed POST #1 answered HTTP 503",
           "expected": "two signed POSTs count +2"}
    m.record("api", "smoke", {"status": "pass", "run_id": "r1", "checks": [ok]})
    m.record("api", "deploy", {"status": "rolled_back", "revision": 3, "checks": [ok, bad]})
    m.record("api", "verify", {"status": "fail", "revision": 3, "run_id": "r2", "checks": [bad]})
    with pytest.raises(ValueError, match="not one of pass, fail"):
        m.record("api", "verify", {"status": "maybe"})
    v = Manifest.load(m.path).verified("api")
    assert v is not None and v.revision == 3 and v.run_id == "r2" and [c.ok for c in v.checks] == [False]
    row = _service_row(Manifest.load(m.path), "api")
    assert row["checks"] == {"smoke": [ok], "deploy": [ok, bad], "verify": [bad]}
    text = markdown({"release_id": "dev-abcdef1", "env": "dev", "status": "failed", "version": {},
                     "duration_s": 1.0, "run_id": "r2", "stages": [], "services": {"api": row}})
    assert "## Functional checks after the deploy" in text
    assert "| api | deploy | PUT+GET /t/{id} (JWT) | ✅ ok |" in text
    assert ("| api | verify | POST+GET /t/{id}/plays (JWT) | ❌ expected two signed POSTs count +2, got signed POST "
            "#1 answered HTTP 503 |") in text
    from pipeline.release.html_report import render_report

    html = render_report({"release_id": "dev-abcdef1", "env": "dev", "status": "failed", "services": {"api": row}},
                         [], tmp_path)
    assert "<h2>Functional checks after the deploy</h2>" in html
    assert "<span class=failed>failed</span>: expected two signed POSTs count +2, got signed POST #1" in html


@pytest.mark.parametrize(("host", "expected"), [
    ("nats", ("veza-prod", "nats")),
    ("nats.veza-data", ("veza-data", "nats")),
    ("nats.veza-data.svc", ("veza-data", "nats")),
    ("nats.veza-data.svc.cluster.local", ("veza-data", "nats")),
    ("10.0.0.12", ("veza-prod", "10.0.0.12")),
    ("nats.example.com", ("veza-prod", "nats.example.com")),
])
def test_a_nats_host_names_its_service_by_kubernetes_dns_rules(host: str, expected: tuple[str, str]) -> None:
    from pipeline.stages.deploy.checks import service_of_host

    assert service_of_host(host, "veza-prod") == expected
