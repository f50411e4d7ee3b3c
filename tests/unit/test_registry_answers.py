"""Registry answers read without blind trust: digests (OCI distribution spec), WWW-Authenticate challenges
(RFC 9110 §11.6.1), non-JSON and odd error bodies — pure functions on real answer shapes, no server."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipeline.tools.registry_answers import (
    DigestMismatch,
    json_document,
    one_line_text,
    parse_challenges,
    verified_digest,
)
from pipeline.tools.registry_api import RegistryClient, RegistryRequestError
from pipeline.tools.registry_errors import body_errors, classify_response

BODY = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
RIGHT = "sha256:" + hashlib.sha256(BODY).hexdigest()
OTHER = "sha256:" + hashlib.sha256(b"something else").hexdigest()


def test_a_right_header_is_the_digest() -> None:
    assert verified_digest(BODY, RIGHT) == RIGHT
    assert verified_digest(BODY, None) == RIGHT          # registries may omit the header
    assert verified_digest(BODY, RIGHT, RIGHT) == RIGHT  # pulled by digest


def test_a_200_with_a_wrong_docker_content_digest_is_refused() -> None:
    with pytest.raises(DigestMismatch, match="does not match the bytes served"):
        verified_digest(BODY, OTHER)


def test_bytes_that_are_not_the_requested_digest_are_refused() -> None:
    with pytest.raises(DigestMismatch, match=f"asked for {OTHER}"):
        verified_digest(BODY, None, OTHER)


def test_a_header_that_is_not_a_digest_is_refused() -> None:
    with pytest.raises(DigestMismatch, match="is not a digest"):
        verified_digest(BODY, "<html>")


def test_sha512_headers_are_checked_with_sha512() -> None:
    d512 = "sha512:" + hashlib.sha512(BODY).hexdigest()
    assert verified_digest(BODY, d512) == d512


@pytest.mark.parametrize(("header", "expected"), [
    ('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"',
     [("bearer", {"realm": "https://auth.example/token", "service": "registry.example",
                  "scope": "repository:a/b:pull"})]),
    ('Bearer realm="https://a/t",scope="repository:a:pull,push",error="insufficient_scope"',
     [("bearer", {"realm": "https://a/t", "scope": "repository:a:pull,push", "error": "insufficient_scope"})]),
    ("Bearer realm=https://a/token,service=registry.docker.io",
     [("bearer", {"realm": "https://a/token", "service": "registry.docker.io"})]),
    ('BASIC realm = "Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
    ('Basic realm="r", Bearer realm="https://t", service="s"',
     [("basic", {"realm": "r"}), ("bearer", {"realm": "https://t", "service": "s"})]),
    ('Bearer realm="a\\"b"', [("bearer", {"realm": 'a"b'})]),
    ('Negotiate, Basic realm="x"', [("negotiate", {}), ("basic", {"realm": "x"})]),
    ("", []),
])
def test_www_authenticate_challenges(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    assert parse_challenges(header) == expected


def test_an_html_500_is_one_readable_line_and_transient() -> None:
    page = (b"<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
            b"<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx &amp; co</center>\r\n"
            b"</body>\r\n</html>\r\n")
    f = classify_response(500, page)
    assert f.kind == "transient"
    assert f.detail == "500 Internal Server Error 500 Internal Server Error nginx & co"
    assert "\n" not in one_line_text(b"line one\nline two") == "line one line two"


def test_several_codes_and_odd_entries() -> None:
    body = json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"},
                                  {"code": "DENIED", "message": "requested access is denied"},
                                  {"code": None, "message": "no code"}, "not a dict"]}).encode()
    assert body_errors(body) == [("NAME_UNKNOWN", "repository name not known"),
                                 ("DENIED", "requested access is denied"), ("", "no code")]
    f = classify_response(403, body)
    assert f.codes == ("NAME_UNKNOWN", "DENIED") and f.kind == "auth"
    assert f.detail == "NAME_UNKNOWN: repository name not known; DENIED: requested access is denied; no code"


def test_429_retry_after_seconds_and_http_date() -> None:
    assert classify_response(429, b"", {"retry-after": "7"}).retry_after_s == 7.0
    past = classify_response(429, b"", {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert (past.kind, past.retry_after_s) == ("transient", 0.0)


@pytest.mark.parametrize("data", [b"<html>proxy login</html>", b"null", b"[1, 2]", b"\xff\xfe"])
def test_json_document_refuses_what_is_not_an_object(data: bytes) -> None:
    with pytest.raises(ValueError, match="tags of a"):
        json_document(data, "tags of a")


class CannedRegistry(RegistryClient):
    """The real client over canned answers of one registry (its transport replaced, nothing else): what a
    registry behind a broken proxy or with corrupt storage sends."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        super().__init__("127.0.0.1:1", scheme="http")
        self.answers = answers
        self.asked: list[tuple[str, str, dict[str, str]]] = []

    def _raw(self, method: str, url: str, headers: dict[str, str],
             body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        self.asked.append((method, url, headers))
        return self.answers.pop(0)


def test_client_refuses_a_manifest_whose_digest_header_lies() -> None:
    reg = CannedRegistry([(200, {"docker-content-digest": OTHER}, BODY)])
    with pytest.raises(RegistryRequestError, match="does not match the bytes served") as exc:
        reg.get_manifest("veza/api", "1.0.0")
    assert exc.value.exit_code != 0 and "\n" not in str(exc.value)


def test_client_refuses_bytes_that_are_not_the_digest_it_pulled() -> None:
    reg = CannedRegistry([(200, {}, BODY)])
    with pytest.raises(RegistryRequestError, match=f"asked for {OTHER}"):
        reg.get_manifest("veza/api", OTHER)


def test_client_refuses_a_push_whose_stored_digest_differs() -> None:
    reg = CannedRegistry([(201, {"docker-content-digest": OTHER}, b"")])
    with pytest.raises(RegistryRequestError, match="does not match"):
        reg.put_manifest("veza/api", "1.0.0", BODY, "application/vnd.oci.image.manifest.v1+json")
    assert CannedRegistry([(201, {"docker-content-digest": RIGHT}, b"")]).put_manifest(
        "veza/api", "1.0.0", BODY, "application/vnd.oci.image.manifest.v1+json") == RIGHT


def test_client_answers_an_unquoted_bearer_challenge() -> None:
    reg = CannedRegistry([
        (401, {"www-authenticate": "Bearer realm=http://127.0.0.1:1/token,service=reg"}, b""),
        (200, {}, b'{"token": "t0k3n-for-test"}'),
        (200, {}, b'{"name": "veza/api", "tags": ["1.0.0"]}'),
    ])
    assert reg.tags("veza/api") == ["1.0.0"]
    assert reg.asked[1][1].startswith("http://127.0.0.1:1/token?service=reg&scope=repository")
    assert reg.asked[2][2]["Authorization"] == "Bearer t0k3n-for-test"


def test_client_tags_from_an_html_page_is_one_clear_error() -> None:
    reg = CannedRegistry([(200, {"content-type": "text/html"}, b"<html>Sign in to the proxy</html>")])
    with pytest.raises(RegistryRequestError, match="tags of veza/api: the answer is not JSON"):
        reg.tags("veza/api")
