"""A small client of the OCI distribution API (urllib): manifests, tags, blob mounts, upload checks.

Used for "already there?" checks, digest verification, the push pre-flight and same-registry promotion.
Auth: anonymous, Basic, or Bearer tokens from the registry's token realm (Docker Hub / Harbor style),
answering the registry's own 401 challenge. Every credential is registered with pipeline.core.redact.

Errors are classified for the retry policy by the registry's error code first, then the HTTP status
(pipeline/tools/registry_errors.py): RegistryUnavailable (transient: TOOMANYREQUESTS, UNAVAILABLE, 408/429/
500/502/503/504, connection refused/reset, timeouts; carries the Retry-After wait) vs RegistryAuthError
(UNAUTHORIZED, DENIED, 401/403) vs RegistryRequestError (NAME_UNKNOWN, MANIFEST_INVALID, … other 4xx,
unknown host).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pipeline.core.errors import RegistryAuthError, RegistryTrustError, StageFailed
from pipeline.core.redact import redact, register_secret
from pipeline.tools.registry_answers import DigestMismatch, digest_of, json_document, parse_challenges, verified_digest
from pipeline.tools.registry_errors import classify_response

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
ACCEPT = ", ".join(MANIFEST_TYPES)
LOOPBACK = ("127.", "localhost", "[::1]")


class RegistryRequestError(StageFailed):
    """A permanent registry failure (4xx other than auth, unknown host): retrying will not help."""

    transient = False


class RegistryUnavailable(StageFailed):
    """A transient failure (TOOMANYREQUESTS, 429/502/503/504, connection refused/reset, timeout): worth
    retrying. retry_after_s: the wait the registry asked for (Retry-After), None when it did not say."""

    transient = True

    def __init__(self, message: str, hint: str | None = None, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s


def raise_failure(kind: str, what: str, msg: str, *, auth_hint: str, fix: str) -> NoReturn:
    """A registry failure a tool reported (`kind` from registry_errors: tls | auth | transient | anything else),
    as RegistryTrustError (exit 2), RegistryAuthError (exit 2, `auth_hint`), RegistryUnavailable (retried) or
    RegistryRequestError (`fix`).
    `what` names the call ("push of repo:tag", "skopeo copy A → B"); `msg` is the tool's line, redacted."""
    if kind == "tls":
        raise RegistryTrustError(f"{what}: the registry's certificate does not verify: {msg}",
                                 "set the environment's registry_ca_file to the CA that signed it")
    if kind == "auth":
        raise RegistryAuthError(f"{what} refused: {msg}", auth_hint)
    if kind == "transient":
        raise RegistryUnavailable(f"{what}: {msg}", "retry later")
    raise RegistryRequestError(f"{what} failed: {msg}", fix)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __post_init__(self) -> None:
        register_secret(self.password)
        register_secret(self.basic())

    def basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def __repr__(self) -> str:  # never print a password by accident
        return f"Credentials({self.username!r}, ***)"


@dataclass(frozen=True)
class ManifestRef:
    digest: str
    media_type: str
    size: int


def is_loopback(address: str) -> bool:
    return address.startswith(LOOPBACK)


class RegistryClient:
    """One registry (host:port). Thread-safe: tokens are cached per scope behind a lock."""

    def __init__(self, address: str, *, credentials: Credentials | None = None, scheme: str | None = None,
                 cafile: Path | None = None, timeout: float = 30.0, where: str = "",
                 auth_fix: str = "") -> None:
        """`cafile`: the CA that verifies the registry's certificate (None: the system store; loopback: none
        needed). `where` starts every auth/TLS error ("environment dev: registry host:port"); `auth_fix` is
        the hint of a refused credential (which variables to set). RegistryTrustError (exit 2) at the first
        request when `cafile` cannot be read or holds no certificate."""
        self.address = address
        self.credentials = credentials
        self.timeout = timeout
        self.where = where or f"registry {address}"
        self.auth_fix = auth_fix or ("check the credentials: the env vars named in [registry] username_env/"
                                     "password_env, or `docker login` (docker config)")
        self._cafile = cafile
        self._ctx: ssl.SSLContext | None = None
        self._scheme = scheme
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        self._basic_preferred = False

    @property
    def cafile(self) -> Path | None:
        """The CA file that verifies this registry's certificate (None: system store, or loopback)."""
        return self._cafile

    # -- transport
    @property
    def scheme(self) -> str:
        if self._scheme is None:
            self._scheme = self._detect_scheme()
        return self._scheme

    def _detect_scheme(self) -> str:
        """https, except a loopback registry that speaks plain http (what docker and skopeo accept too)."""
        if not is_loopback(self.address) or self._cafile:
            return "https"
        try:
            status, _, body = self._raw("GET", f"http://{self.address}/v2/", {}, None)
        except RegistryUnavailable:
            return "https"  # maybe TLS; the next request says
        if status == 400 and b"HTTPS" in body:
            return "https"
        return "http"

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._cafile:
            if self._ctx is None:
                try:
                    self._ctx = ssl.create_default_context(cafile=str(self._cafile))
                except (OSError, ssl.SSLError, ValueError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
                    raise RegistryTrustError(f"{self.where}: CA file {self._cafile} cannot be used ({why})",
                                             "point the environment's registry_ca_file at a readable PEM file "
                                             "holding the CA certificate") from None
            return self._ctx
        if is_loopback(self.address):
            # Loopback TLS registries are self-signed (docker treats 127.0.0.0/8 as insecure too).
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return None

    def _raw(self, method: str, url: str, headers: dict[str, str],
             body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        ctx = self._ssl_context() if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=ctx) as r:
                return int(r.status), {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), {k.lower(): v for k, v in exc.headers.items()}, exc.read() or b""
        except ssl.SSLCertVerificationError as exc:
            self._untrusted(exc)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                self._untrusted(reason)
            if isinstance(reason, socket.gaierror):
                raise RegistryRequestError(f"unknown registry host '{self.address.split(':')[0]}' ({reason})",
                                           "check the registry address in pipeline.toml ([registry] / env)"
                                           ) from None
            raise RegistryUnavailable(f"registry {self.address} unreachable: {reason}",
                                      "is it running? (local: invoke registry-up)") from None
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError, http.client.HTTPException) as exc:
            # HTTPException: a connection reset mid-answer (IncompleteRead, RemoteDisconnected, BadStatusLine)
            raise RegistryUnavailable(f"registry {self.address}: {type(exc).__name__}: {exc}",
                                      "is it running? (local: invoke registry-up)") from None

    def _untrusted(self, exc: ssl.SSLCertVerificationError) -> NoReturn:
        """A certificate the configured trust does not verify: RegistryTrustError (exit 2, never retried)."""
        trust = f"CA file {self._cafile}" if self._cafile else "the system's CA store"
        raise RegistryTrustError(f"{self.where}: TLS verification failed against {trust} "
                                 f"({exc.verify_message or exc.reason})",
                                 "set the environment's registry_ca_file to the CA that signed the registry's "
                                 "certificate (its SAN must name the address)") from None

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                body: bytes | None = None, scope: str = "", ok: tuple[int, ...] = (200,),
                allow: tuple[int, ...] = ()) -> tuple[int, dict[str, str], bytes]:
        """One API call with auth. Status in `ok`+`allow` is returned; others raise a classified error."""
        url = path if path.startswith("http") else f"{self.scheme}://{self.address}{path}"
        hdrs = dict(headers or {})
        auth = self._auth_header(scope)
        if auth:
            hdrs["Authorization"] = auth
        status, rh, data = self._raw(method, url, hdrs, body)
        if status == 401:
            challenge = rh.get("www-authenticate", "")
            new_auth = self._answer_challenge(challenge, scope)
            if new_auth and new_auth != auth:
                hdrs["Authorization"] = new_auth
                status, rh, data = self._raw(method, url, hdrs, body)
        if status in ok or status in allow:
            return status, rh, data
        self._raise_for(status, method, path, data, rh)
        raise AssertionError("unreachable")

    def _raise_for(self, status: int, method: str, path: str, data: bytes,
                   headers: dict[str, str] | None = None) -> None:
        failure = classify_response(status, data, headers)
        detail = redact(failure.detail)[:300]
        where = f"{method} {self.address}{path.split('?')[0]}"
        if failure.kind == "auth":
            who = f"user '{self.credentials.username}'" if self.credentials else "anonymous access"
            raise RegistryAuthError(
                f"{self.where} refused {who} (HTTP {status}{': ' + detail if detail else ''})", self.auth_fix)
        if failure.kind == "transient":
            wait = f" (Retry-After {failure.retry_after_s:g}s)" if failure.retry_after_s is not None else ""
            raise RegistryUnavailable(f"{where}: HTTP {status} {detail}{wait}".strip(), "retry later",
                                      retry_after_s=failure.retry_after_s)
        raise RegistryRequestError(f"{where}: HTTP {status} {detail}".strip(),
                                   "check the repository name and the image reference")

    # -- auth
    def _auth_header(self, scope: str) -> str | None:
        with self._lock:
            if scope in self._tokens:
                return f"Bearer {self._tokens[scope]}"
            if self._basic_preferred and self.credentials:
                return f"Basic {self.credentials.basic()}"
        return None

    def _answer_challenge(self, challenge: str, scope: str) -> str | None:
        offered = dict(reversed(parse_challenges(challenge)))  # the first challenge of a scheme wins
        kind = "bearer" if "bearer" in offered else "basic" if "basic" in offered else ""
        fields = offered.get(kind, {})
        if kind == "basic":
            if not self.credentials:
                return None
            with self._lock:
                self._basic_preferred = True
            return f"Basic {self.credentials.basic()}"
        if kind == "bearer":
            token = self._fetch_token(fields.get("realm", ""), fields.get("service", ""),
                                      scope or fields.get("scope", ""))
            if token:
                with self._lock:
                    self._tokens[scope] = token
                return f"Bearer {token}"
        return None

    def _fetch_token(self, realm: str, service: str, scope: str) -> str | None:
        if not realm:
            return None
        query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        url = realm + ("?" + urllib.parse.urlencode(query) if query else "")
        hdrs = {"Authorization": f"Basic {self.credentials.basic()}"} if self.credentials else {}
        status, rh, data = self._raw("GET", url, hdrs, None)
        if status != 200:
            self._raise_for(status, "GET", "/token", data, rh)
        try:
            doc = json_document(data, f"token realm {realm}")
        except ValueError:
            return None
        token = doc.get("token") or doc.get("access_token")
        register_secret(token)
        return str(token) if token else None

    # -- the API
    def ping(self) -> int:
        """Authenticate against /v2/ (200 means: these credentials, or none, are accepted)."""
        status, _, _ = self.request("GET", "/v2/", scope="")
        return status

    def head_manifest(self, repo: str, ref: str) -> ManifestRef | None:
        """Digest of repo:ref (tag or digest) or None when absent. No body is transferred."""
        status, h, _ = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                                    scope=_pull(repo), allow=(404,))
        if status == 404:
            return None
        digest = h.get("docker-content-digest", "")
        if not digest:  # some registries omit the header on HEAD: fall back to GET and hash the bytes
            got = self.get_manifest(repo, ref)
            return None if got is None else got[0]
        if ref.startswith("sha256:") and digest.strip() != ref:
            self._bad_digest(repo, ref, f"asked for {ref}, Docker-Content-Digest says {digest.strip()[:80]}")
        return ManifestRef(digest, h.get("content-type", ""), int(h.get("content-length", "0") or 0))

    def get_manifest(self, repo: str, ref: str) -> tuple[ManifestRef, bytes] | None:
        status, h, data = self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                                       scope=_pull(repo), allow=(404,))
        if status == 404:
            return None
        try:
            digest = verified_digest(data, h.get("docker-content-digest"), ref if ":" in ref else None)
        except DigestMismatch as exc:
            self._bad_digest(repo, ref, str(exc))
        return ManifestRef(digest, h.get("content-type", ""), len(data)), data

    def _bad_digest(self, repo: str, ref: str, why: str) -> NoReturn:
        raise RegistryRequestError(f"registry {self.address} served a manifest of {repo}:{ref} that is not what "
                                   f"it claims: {why}",
                                   "do not trust this registry's copy: push the image again, or check the proxy "
                                   "in front of the registry")

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """Upload a manifest under a tag (or digest); returns the digest the registry computed."""
        _, h, _ = self.request("PUT", f"/v2/{repo}/manifests/{ref}", headers={"Content-Type": media_type},
                               body=body, scope=_push(repo), ok=(201, 200))
        try:  # the registry names the digest it stored: it must be the one of the bytes sent
            return verified_digest(body, h.get("docker-content-digest"))
        except DigestMismatch as exc:
            self._bad_digest(repo, ref, str(exc))

    def tags(self, repo: str) -> list[str]:
        status, _, data = self.request("GET", f"/v2/{repo}/tags/list?n=10000", scope=_pull(repo),
                                       allow=(404,))
        if status == 404:
            return []
        return [str(t) for t in (self._doc(data, f"tags of {repo}").get("tags") or [])]

    def catalog(self) -> list[str]:
        # The distribution registry refuses n above its maximum (1000 by default).
        _, _, data = self.request("GET", "/v2/_catalog?n=1000", scope="registry:catalog:*")
        return [str(r) for r in (self._doc(data, "catalog").get("repositories") or [])]

    def _doc(self, data: bytes, what: str) -> dict[str, Any]:
        try:
            return json_document(data, f"registry {self.address}: {what}")
        except ValueError as exc:
            raise RegistryRequestError(str(exc), "check that the address is a registry (not a proxy's page)") from None

    def blob_exists(self, repo: str, digest: str) -> bool:
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=_pull(repo), allow=(404,))
        return status == 200

    def get_blob(self, repo: str, digest: str, *, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        """A blob's bytes (small artifacts: signatures, attestations), checked against its digest.

        RegistryRequestError when the registry serves something else or more than `max_bytes`.
        """
        _, _, data = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=_pull(repo))
        if len(data) > max_bytes or digest_of(data) != digest:
            raise RegistryRequestError(f"registry {self.address} served a blob of {repo} that is not {digest}",
                                       "the registry storage may be corrupt: push the artifact again")
        return data

    def upload_blob(self, repo: str, data: bytes) -> str:
        """Monolithic blob upload (POST then PUT ?digest=); returns the blob's digest. Skipped when the registry
        has the blob already. StageFailed when the registry gives no upload location; RegistryRequestError etc.
        as request()."""
        digest = digest_of(data)
        if self.blob_exists(repo, digest):
            return digest
        scope = _push(repo)
        _, h, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,))
        location = h.get("location", "")
        if not location:
            raise StageFailed(f"registry {self.address} gave no upload location for {repo}")
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest={urllib.parse.quote(digest)}"
        self.request("PUT", url, headers={"Content-Type": "application/octet-stream"}, body=data, scope=scope,
                     ok=(201, 204))
        return digest

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount (no data moves). False when the registry asks for an upload instead."""
        scope = f"{_push(repo)} {_pull(from_repo)}"
        q = urllib.parse.urlencode({"mount": digest, "from": from_repo})
        status, h, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/?{q}", scope=scope, ok=(201, 202))
        if status == 202 and h.get("location"):  # an upload session was opened instead: close it
            self._cancel_upload(h["location"], repo)
            return False
        return True

    def check_push_access(self, repo: str) -> None:
        """Prove write access without writing: open a blob upload session, then cancel it."""
        _, h, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=_push(repo), ok=(202,))
        loc = h.get("location")
        if loc:
            self._cancel_upload(loc, repo)

    def _cancel_upload(self, location: str, repo: str) -> None:
        url = location if location.startswith("http") else f"{self.scheme}://{self.address}{location}"
        try:
            self.request("DELETE", url, scope=_push(repo), ok=(204, 200, 202), allow=(404,))
        except RegistryRequestError:
            pass  # an unfinished upload session expires on its own

    def children(self, media_type: str, body: bytes) -> tuple[list[str], list[str]]:
        """(blob digests, child manifest digests) referenced by a manifest or an index."""
        doc = json.loads(body)
        if media_type in INDEX_TYPES or doc.get("manifests") is not None:
            return [], [str(m["digest"]) for m in doc.get("manifests") or []]
        blobs = [str(doc["config"]["digest"])] if doc.get("config") else []
        blobs += [str(layer["digest"]) for layer in doc.get("layers") or []]
        return blobs, []


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def _push(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def split_repository(repository: str) -> tuple[str, str]:
    """'127.0.0.1:5000/veza/api' → ('127.0.0.1:5000', 'veza/api')."""
    host, _, path = repository.partition("/")
    if not path or ("." not in host and ":" not in host and host != "localhost"):
        raise RegistryRequestError(f"repository '{repository}' does not name a registry host",
                                   "use host[:port]/path, e.g. 127.0.0.1:5000/veza/veza-backend-api")
    return host, path


def copy_within_registry(client: RegistryClient, src_repo: str, digest: str, dst_repo: str,
                         tags: list[str]) -> str:
    """Promote inside one registry: mount every blob, put the exact manifest bytes under each tag.

    The manifest bytes never change, so the digest is the same (the registry recomputes and we check it).
    """
    got = client.get_manifest(src_repo, digest)
    if got is None:
        raise RegistryRequestError(f"{client.address}/{src_repo}@{digest} is not in the registry",
                                   "push it first (invoke push --env <source env>)")
    ref, body = got
    _copy_tree(client, src_repo, dst_repo, ref.media_type, body)
    if not tags:
        client.put_manifest(dst_repo, digest, body, ref.media_type)
    for tag in tags:
        put = client.put_manifest(dst_repo, tag, body, ref.media_type)
        if put != digest:
            raise RegistryRequestError(f"{dst_repo}:{tag} got digest {put}, expected {digest}",
                                       "the registry rewrote the manifest; promote with skopeo")
    return digest


def _copy_tree(client: RegistryClient, src: str, dst: str, media_type: str, body: bytes) -> None:
    blobs, manifests = client.children(media_type, body)
    for child in manifests:
        got = client.get_manifest(src, child)
        if got is None:
            raise RegistryRequestError(f"{src}@{child} (child of an index) is missing", "re-push the image")
        _copy_tree(client, src, dst, got[0].media_type, got[1])
        client.put_manifest(dst, child, got[1], got[0].media_type)
    for blob in blobs:
        if src != dst and not client.blob_exists(dst, blob) and not client.mount_blob(dst, blob, src):
            raise RegistryRequestError(f"registry {client.address} refused to mount {blob} into {dst}",
                                       "use skopeo for this copy")
