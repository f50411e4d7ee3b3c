"""What a registry's refusal means for a retry: transient, permanent or auth — by the registry's error code.

Sources: the OCI distribution spec, "Error Codes" (the JSON body `{"errors": [{"code", "message",
"detail"}]}` and the codes below), the CNCF distribution registry's `registry/api/errcode` (it adds UNKNOWN
and UNAVAILABLE, and its clients print a code as lowercase words: `toomanyrequests: Rate exceeded`,
`name unknown: repository name not known to registry`), and RFC 9110 §10.2.3 for `Retry-After`
(delay-seconds or an HTTP-date).

Decision order: an error code found in the body or message decides (TOOMANYREQUESTS, UNAVAILABLE → transient;
UNAUTHORIZED, DENIED → auth; every other spec code → permanent); without a code, the HTTP status decides
(408, 429, 500, 502, 503, 504 → transient; 401, 403 → auth; other 4xx/5xx → permanent); without either,
network failures (connection reset/refused, broken pipe, EOF, timeouts) are transient. Nothing else is
guessed from prose.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from pipeline.tools.registry_answers import one_line_text

TRANSIENT_CODES = frozenset({"TOOMANYREQUESTS", "UNAVAILABLE"})
AUTH_CODES = frozenset({"UNAUTHORIZED", "DENIED"})
PERMANENT_CODES = frozenset({
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED", "NAME_INVALID", "NAME_UNKNOWN",
    "SIZE_INVALID", "TAG_INVALID", "UNSUPPORTED", "PAGINATION_NUMBER_INVALID", "RANGE_INVALID",
})
CODES = TRANSIENT_CODES | AUTH_CODES | PERMANENT_CODES
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
AUTH_STATUS = frozenset({401, 403})

# A code as the spec writes it (NAME_UNKNOWN) or as Go clients print it (name unknown), as a whole word,
# followed by ':' or the end, or quoted in a JSON body ("code":"TOOMANYREQUESTS").
_CODE_TEXT = re.compile(
    r"(?<![\w-])(" + "|".join(sorted({c for code in CODES for c in (code, code.replace("_", " "))},
                                     key=len, reverse=True)) + r")(?=\s*:|\")", re.I)
# RFC 9110 reason phrases of the statuses that matter, for messages that carry the phrase without the number.
_REASONS = {"too many requests": 429, "bad gateway": 502, "service unavailable": 503, "gateway timeout": 504,
            "request timeout": 408, "internal server error": 500, "unauthorized": 401, "forbidden": 403}
_REASON_TEXT = re.compile(r"\b(" + "|".join(_REASONS) + r")\b", re.I)
_STATUS_TEXT = re.compile(r"(?:\bstatus(?:\s*code)?\s*[:=]?\s*|\bHTTP[/ ][\d.]*\s*|\b)(4\d\d|5\d\d)\b"
                          r"(?=\s|$|[:;,)]|\s*(?:Too Many|Bad Gateway|Service Unavailable|Gateway Time|"
                          r"Unauthorized|Forbidden|Not Found|Internal Server))", re.I)
_NETWORK = re.compile(r"connection reset|connection refused|broken pipe|unexpected EOF|\bEOF\b|i/o timeout|"
                      r"timed out|timeout exceeded|TLS handshake timeout|server closed|closed network connection|"
                      r"connection aborted|no route to host|network is unreachable|RemoteDisconnected|"
                      r"IncompleteRead", re.I)


@dataclass(frozen=True)
class RegistryFailure:
    kind: str                      # transient | auth | permanent
    codes: tuple[str, ...]         # distribution error codes found, upper case (NAME_UNKNOWN)
    status: int | None             # HTTP status when known
    detail: str                    # "CODE: message; …" from a JSON body, else the text given
    retry_after_s: float | None = None


def body_errors(body: bytes | str) -> list[tuple[str, str]]:
    """(code, message) pairs of a distribution-spec error body; [] when it is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, TypeError):
        return []
    errs = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errs, list):
        return []
    return [(code.upper() if isinstance(code := e.get("code"), str) else "", str(e.get("message") or ""))
            for e in errs if isinstance(e, dict)]


def codes_in_text(text: str) -> tuple[str, ...]:
    """The distribution error codes a client's message names (`toomanyrequests: …`, `"code":"DENIED"`)."""
    found = [m.group(1).upper().replace(" ", "_") for m in _CODE_TEXT.finditer(text)]
    return tuple(dict.fromkeys(found))


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); None if
    absent or unreadable. A date in the past is 0."""
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        when = parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _by_codes(codes: tuple[str, ...]) -> str | None:
    if any(c in TRANSIENT_CODES for c in codes):
        return "transient"
    if any(c in AUTH_CODES for c in codes):
        return "auth"
    if any(c in PERMANENT_CODES for c in codes):
        return "permanent"
    return None


def _by_status(status: int | None) -> str | None:
    if status is None:
        return None
    if status in TRANSIENT_STATUS:
        return "transient"
    if status in AUTH_STATUS:
        return "auth"
    return "permanent" if status >= 400 else None


def classify_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> RegistryFailure:
    """An HTTP error answer of a registry (headers lower-cased) → its RegistryFailure. `detail` is one line:
    the errors array as `CODE: message; …`, or a non-JSON body (an HTML error page) as its text."""
    errs = body_errors(body)
    codes = tuple(dict.fromkeys(c for c, _ in errs if c))
    listed = [f"{c}: {m}" if c and m else c or m for c, m in errs if c or m]
    detail = "; ".join(listed) if errs else one_line_text(body[:4096])
    kind = _by_codes(codes) or _by_status(status) or "permanent"
    wait = retry_after((headers or {}).get("retry-after"))
    return RegistryFailure(kind, codes, status, detail, wait if kind == "transient" else None)


_UNTRUSTED = re.compile(r"x509: |certificate signed by unknown authority|tls: failed to verify", re.I)


def classify_text(message: str) -> RegistryFailure:
    """A tool's error message (docker engine, skopeo, ORAS) → its RegistryFailure, by code, status, network;
    kind "tls" when the registry's certificate did not verify (Go's crypto/x509 and crypto/tls words)."""
    if _UNTRUSTED.search(message):
        return RegistryFailure("tls", (), None, message.strip())
    codes = codes_in_text(message)
    m = _STATUS_TEXT.search(message)
    status = int(m.group(1)) if m else None
    if status is None and (r := _REASON_TEXT.search(message)):
        status = _REASONS[r.group(1).lower()]
    kind = _by_codes(codes) or _by_status(status) or ("transient" if _NETWORK.search(message) else "permanent")
    return RegistryFailure(kind, codes, status, message.strip())
