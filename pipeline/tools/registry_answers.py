"""Reading a registry's answers without trusting them blindly: digests, auth challenges, JSON bodies.

Pure functions (no I/O) used by pipeline/tools/registry_api.py. Sources of the rules:

- Digests: the OCI distribution spec, "Pulling manifests" / "Pushing manifests": the registry sends the
  manifest's digest in `Docker-Content-Digest`, and a client **must** verify the content it receives
  against the digest it asked for (pull by digest) and should verify the header against the bytes; the
  digest is `<algorithm>:<hex>` as the OCI image spec's descriptor grammar defines (sha256, sha512).
- Challenges: RFC 9110 §11.6.1 (`WWW-Authenticate`): one or more challenges `scheme 1*SP auth-param *(","
  auth-param)`, each auth-param `token BWS "=" BWS ( token / quoted-string )`, quoted-string with `\\`
  escapes (§5.6.4); the scheme is case-insensitive. The Bearer parameters used are those of the
  distribution token auth spec (`realm`, `service`, `scope`, `error`).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from typing import Any

_ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_DIGEST = re.compile(r"(?P<alg>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'\s*,?\s*(?P<key>{_TOKEN})\s*=\s*(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<t>[^\s,"]+))')
_NEXT_CHALLENGE = re.compile(rf"\s*,?\s*{_TOKEN}\s+{_TOKEN}\s*=")
_SCHEME = re.compile(rf"\s*,?\s*(?P<scheme>{_TOKEN})(?=\s+{_TOKEN}\s*=|\s*(?:,|$))")


class DigestMismatch(ValueError):
    """The registry's bytes or header do not match the digest they must have (message says which)."""


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """`<algorithm>:<hex>` of data. ValueError for an algorithm this client cannot compute."""
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm '{algorithm}'")
    return f"{algorithm}:{_ALGORITHMS[algorithm](data).hexdigest()}"


def verified_digest(body: bytes, header: str | None, requested: str | None = None) -> str:
    """The digest of a manifest body the registry sent, checked against its `Docker-Content-Digest` header
    and, when the manifest was asked for by digest, against that digest.

    Returns `sha256:<hex>` computed from the bytes (or the header's algorithm when it names sha512).
    Raises DigestMismatch when the header or the requested digest disagrees with the bytes, or when the
    header is not a digest at all; an absent header is not an error (some registries omit it).
    """
    algorithm = "sha256"
    if header:
        m = _DIGEST.fullmatch(header.strip())
        if m is None:
            raise DigestMismatch(f"Docker-Content-Digest '{header[:80]}' is not a digest")
        algorithm = m.group("alg") if m.group("alg") in _ALGORITHMS else "sha256"
    actual = digest_of(body, algorithm)
    if header and header.strip() != actual:
        raise DigestMismatch(f"Docker-Content-Digest {header.strip()} does not match the bytes served ({actual})")
    if requested and _DIGEST.fullmatch(requested):
        alg = requested.split(":", 1)[0]
        if alg in _ALGORITHMS and digest_of(body, alg) != requested:
            raise DigestMismatch(f"asked for {requested}, got bytes of {digest_of(body, alg)}")
    return actual


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """`WWW-Authenticate` → [(scheme lower-cased, {param lower-cased: value})], in order (RFC 9110 §11.6.1).

    Values may be quoted (with `\\` escapes) or bare (read up to the next ',' or space: registries send
    bare URLs, which RFC 9110's token does not allow); several challenges may share one header
    (`Basic realm="r", Bearer realm="https://a/token",service=reg`). Unreadable parts are skipped.
    """
    out: list[tuple[str, dict[str, str]]] = []
    pos = 0
    text = header or ""
    while pos < len(text):
        sm = _SCHEME.match(text, pos)
        if sm is None:
            break
        params: dict[str, str] = {}
        pos = sm.end()
        while (pm := _PARAM.match(text, pos)) is not None:
            if _NEXT_CHALLENGE.match(text, pos):
                break  # the next challenge starts here (`, Bearer realm=…`)
            q = pm.group("q")
            params[pm.group("key").lower()] = re.sub(r"\\(.)", r"\1", q) if q is not None else pm.group("t")
            pos = pm.end()
        out.append((sm.group("scheme").lower(), params))
    return out


def json_document(data: bytes, what: str) -> dict[str, Any]:
    """A registry's JSON object answer (tags list, catalog, token). ValueError naming `what` otherwise
    (an HTML page from a proxy, `null`, a list)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{what}: the answer is not JSON ({one_line_text(data, 80)!r})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{what}: the answer is JSON {type(doc).__name__}, not an object")
    return doc


def one_line_text(body: bytes | str, limit: int = 200) -> str:
    """A non-JSON error body as one readable line: HTML tags dropped, entities decoded, whitespace runs
    (newlines included) collapsed, cut to `limit` characters."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if re.search(r"<[A-Za-z!/][^>]*>", text):
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
