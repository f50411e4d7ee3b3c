"""Issue 16, registry errors: retry by the registry's error code (distribution spec), not by prose."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pipeline.core.retry import Attempts, RetryPolicy, with_retries
from pipeline.tools.docker_push import classify
from pipeline.tools.registry_api import RegistryUnavailable
from pipeline.tools.registry_errors import (
    AUTH_CODES,
    PERMANENT_CODES,
    TRANSIENT_CODES,
    classify_response,
    classify_text,
    retry_after,
)


def body(code: str, message: str = "details") -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


def test_the_reported_case_rate_exceeded_is_transient() -> None:
    assert classify("toomanyrequests: Rate exceeded") == "transient"


@pytest.mark.parametrize("code", sorted(TRANSIENT_CODES | AUTH_CODES | PERMANENT_CODES))
def test_every_spec_code_in_every_spelling(code: str) -> None:
    expected = "transient" if code in TRANSIENT_CODES else "auth" if code in AUTH_CODES else "permanent"
    words = code.lower().replace("_", " ")            # how Go clients print an errcode
    for text in (f"{code}: x", f"{words}: x", f"{words.title()}: x", f"error: {body(code).decode()}",
                 f'failed to push: {words}: blob upload failed'):
        assert classify_text(text).kind == expected, text
        assert classify_text(text).codes == (code,), text
    for status in (400, 403, 404, 429, 500, 503):       # the code decides, whatever the status
        assert classify_response(status, body(code)).kind == expected, (code, status)


@pytest.mark.parametrize(("status", "kind"), [
    (408, "transient"), (429, "transient"), (500, "transient"), (502, "transient"), (503, "transient"),
    (504, "transient"), (401, "auth"), (403, "auth"), (400, "permanent"), (404, "permanent"), (405, "permanent"),
    (501, "permanent"),
])
def test_without_a_code_the_status_decides(status: int, kind: str) -> None:
    assert classify_response(status, b"<html>oops</html>").kind == kind
    assert classify_response(status, b"").kind == kind


@pytest.mark.parametrize(("message", "kind"), [
    ("received unexpected HTTP status: 502 Bad Gateway", "transient"),
    ("requesting bearer token: invalid status code from registry 429 (Too Many Requests)", "transient"),
    ("Put \"http://r/v2/x/manifests/t\": read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer",
     "transient"),
    ("Patch \"http://r/v2/x/blobs/uploads/u\": unexpected EOF", "transient"),
    ("name unknown: repository name not known to registry", "permanent"),
    ("manifest unknown: manifest unknown", "permanent"),
    ("the registry is unavailable today", "permanent"),   # prose, no code, no status: not guessed
    ("an unknown blob was found", "permanent"),
])
def test_tool_messages(message: str, kind: str) -> None:
    assert classify_text(message).kind == kind


def test_push_classification_keeps_unknown_host_and_missing_credentials() -> None:
    assert classify('Get "https://x.invalid/v2/": dial tcp: lookup x.invalid: no such host') == "unknown-host"
    assert classify("no basic auth credentials") == "auth"
    assert classify("TOOMANYREQUESTS: slow down") == "transient"
    assert classify("denied: requested access to the resource is denied") == "auth"


def test_retry_after_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    assert retry_after("7") == 7.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after("Sunday, 29-Nov-26 12:00:05 GMT", now) == 5.0        # RFC 850 form
    assert retry_after("Sun Nov 29 12:00:10 2026", now) == 10.0             # asctime form
    assert retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None and retry_after("-3") is None
    got = classify_response(429, body("TOOMANYREQUESTS"), {"retry-after": "4"})
    assert got.kind == "transient" and got.retry_after_s == 4.0 and got.detail == "TOOMANYREQUESTS: details"


def test_retries_wait_at_least_what_the_registry_asked() -> None:
    waits: list[float] = []
    calls = iter([RegistryUnavailable("429", retry_after_s=3.0), RegistryUnavailable("503"), None])

    def op() -> str:
        exc = next(calls)
        if exc is not None:
            raise exc
        return "ok"

    counter = Attempts()
    assert with_retries(op, RetryPolicy(attempts=5, ceiling_s=1.0, base_s=0.1), counter,
                        sleep=waits.append) == "ok"
    assert counter.tries == 3 and waits[0] >= 3.0 and waits[1] <= 1.0


def test_a_retry_after_beyond_the_policy_stops_at_once() -> None:
    counter = Attempts()
    with pytest.raises(RegistryUnavailable):
        with_retries(lambda: (_ for _ in ()).throw(RegistryUnavailable("429", retry_after_s=3600.0)),
                     RetryPolicy(attempts=5, retry_after_max_s=120.0), counter, sleep=lambda s: None)
    assert counter.tries == 1
