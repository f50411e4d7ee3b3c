"""A registry that is not the runner, for the tests of registries on other hosts (and the CI runs that reuse it).

`tls_registry` (session): Debian's `docker-registry serve` on 127.0.0.2:<port> — not 127.0.0.1, so nothing reaches
it by accident through the embedded 127.0.0.1:5000 — with TLS (a CA and a server certificate made here with the
`cryptography` library, SAN = the address) and htpasswd auth (bcrypt, pipeline/local/registry.htpasswd_line).
Nothing here makes an engine trust its CA: the engine treats 127.0.0.0/8 as insecure (no certificate check), and
the cluster node's trust of an environment's registry is what the pipeline writes (pipeline/local/cluster/
registry_trust.py, `invoke cluster-up --env ENV`); the tests that need it ask the pipeline for it. Removed
afterwards with the registry and its storage.

`OutageProxy`: a TLS-terminating HTTP proxy on 127.0.0.2 in front of it that logs every request and, on a chosen
request, starts answering 503 or stops listening (the registry "goes down" in the middle of a push), until
`restore()`. Use it through the `outage_proxy` fixture (function scope: its log is one test's).

Ports: 19200-19249 on 127.0.0.2 (this area's range).
"""

from __future__ import annotations

import http.client
import http.server
import ipaddress
import os
import secrets
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.local.registry import LocalRegistry, write_htpasswd
from pipeline.tools.registry_api import Credentials, RegistryClient

TLS_HOST = "127.0.0.2"
PORTS = range(19200, 19250)
CERTS_D = Path(os.environ.get("VEZA_TEST_DOCKER_CERTS_D", "/etc/docker/certs.d"))
_taken: set[int] = set()
_taken_lock = threading.Lock()


def free_port(host: str = TLS_HOST) -> int:
    """A port of PORTS that nothing listens on at `host`, at most once per session."""
    with _taken_lock:
        for p in PORTS:
            if p in _taken:
                continue
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, p))
                except OSError:
                    continue
            _taken.add(p)
            return p
    raise RuntimeError(f"no free port left in {host}:{PORTS.start}-{PORTS.stop - 1}")


@dataclass(frozen=True)
class Pki:
    """A CA made by the test: its certificate and key (PEM files)."""

    ca_file: Path
    ca_key: Path

    @staticmethod
    def make(directory: Path, name: str = "veza test CA") -> Pki:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return Pki(*_write_pair(cert, key, directory / "ca.crt", directory / "ca.key"))

    def issue(self, host: str, directory: Path) -> tuple[Path, Path]:
        """A server certificate for `host` (IP SAN), signed by this CA: (cert.pem, key.pem) in `directory`."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
        return _write_pair(cert, key, directory / "cert.pem", directory / "key.pem")


def _write_pair(cert: Any, key: Any, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
    """A certificate and its private key as PEM files (the key 0600)."""
    from cryptography.hazmat.primitives import serialization

    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path


@contextmanager
def engine_trusts(address: str, ca_file: Path) -> Iterator[Path]:
    """The Docker engine (and the cluster node on it) trusts `ca_file` for `address`: certs.d/<address>/ca.crt,
    removed afterwards (with its directory, which must not exist before: another test's trust is left alone)."""
    directory = CERTS_D / address
    if directory.exists():
        raise RuntimeError(f"{directory} exists already: another test trusts {address}")
    made = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True)
    try:
        shutil.copyfile(ca_file, directory / "ca.crt")
        yield directory / "ca.crt"
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for p in made[1:]:   # the parents this made (e.g. certs.d itself), when nothing else is in them
            try:
                p.rmdir()
            except OSError:
                break


@dataclass
class TlsRegistry:
    """The running TLS + htpasswd registry: its address, its CA, the one user it accepts."""

    registry: LocalRegistry
    pki: Pki
    username: str
    password: str

    @property
    def address(self) -> str:
        return self.registry.address

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_file

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.username, self.password)

    def client(self, *, authenticated: bool = True, address: str | None = None) -> RegistryClient:
        """A client that verifies the certificate with the CA (and logs in unless `authenticated` is False)."""
        return RegistryClient(address or self.address, credentials=self.credentials if authenticated else None,
                              cafile=self.ca_file, timeout=20)


@contextmanager
def running_tls_registry(root: Path) -> Iterator[TlsRegistry]:
    """Start a TLS + htpasswd registry under `root` on 127.0.0.2, trusted by the engine; all removed afterwards."""
    pki = Pki.make(root / "pki")
    cert = pki.issue(TLS_HOST, root / "tls")
    user, password = "veza-ci", secrets.token_urlsafe(18)
    htpasswd = write_htpasswd(root / "auth" / "htpasswd", {user: password})
    reg = LocalRegistry(free_port(), root=root / "registry", htpasswd=htpasswd, tls=cert, host=TLS_HOST, ca=pki.ca_file)
    with reg:
        yield TlsRegistry(reg, pki, user, password)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRegistry]:
    """One TLS + htpasswd registry on 127.0.0.2 for the session (see the module docstring)."""
    with running_tls_registry(tmp_path_factory.mktemp("tls-registry")) as reg:
        yield reg


_UNAVAILABLE = b'{"errors":[{"code":"UNAVAILABLE","message":"service unavailable (test outage)"}]}'
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Seen:
    method: str
    path: str
    status: int   # what the client got; 0: the connection was dropped


@dataclass
class OutageProxy:
    """TLS in front of `upstream` on 127.0.0.2:<port>, HTTP-aware: every request is logged (`seen`) and relayed,
    until a request matches `fail_on(...)`: from that one on, every request is answered 503 UNAVAILABLE
    (mode "503") or the proxy stops listening and drops its connections (mode "down": connection refused),
    until `restore()`. Its certificate is the registry's CA's; the engine trusts it like the registry."""

    upstream: TlsRegistry
    root: Path
    port: int = field(default_factory=free_port)
    mode: str = "pass"
    seen: list[Seen] = field(default_factory=list)
    _trigger: tuple[str, str, str] | None = None
    _server: http.server.ThreadingHTTPServer | None = None
    _stopping: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"{TLS_HOST}:{self.port}"

    def fail_on(self, method: str, path_part: str, mode: str) -> None:
        """From the first `method` request whose path contains `path_part`: `mode` ("503" or "down")."""
        assert mode in ("503", "down")
        self._trigger = (method, path_part, mode)

    def restore(self) -> None:
        """The registry is back: relay everything again (listening again after "down")."""
        self._trigger = None
        if self._stopping is not None:
            self._stopping.join(timeout=10)
            self._stopping = None
        self.mode = "pass"
        if self._server is None:
            self._listen()

    def requests(self, method: str, path_part: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and path_part in s.path]

    def start(self) -> OutageProxy:
        self.cert = self.upstream.pki.issue(TLS_HOST, self.root / "proxy-tls")
        self._listen()
        return self

    def _listen(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        server = http.server.ThreadingHTTPServer((TLS_HOST, self.port), Handler)
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*map(str, self.cert))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def _go_down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._stopping = threading.Thread(target=lambda: (server.shutdown(), server.server_close()), daemon=True)
            self._stopping.start()

    def _record(self, h: http.server.BaseHTTPRequestHandler, status: int) -> None:
        with self._lock:
            self.seen.append(Seen(h.command, h.path, status))

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        trigger = self._trigger
        if self.mode == "pass" and trigger and h.command == trigger[0] and trigger[1] in h.path:
            self.mode = trigger[2]
        body = _read_body(h)
        if self.mode == "down":
            self._record(h, 0)
            h.close_connection = True
            h.connection.close()
            self._go_down()
            return
        if self.mode == "503":
            self._record(h, 503)
            h.send_response(503)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(_UNAVAILABLE)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(_UNAVAILABLE)
            return
        conn = http.client.HTTPSConnection(TLS_HOST, self.upstream.registry.port, timeout=60,
                                           context=ssl.create_default_context(cafile=str(self.upstream.ca_file)))
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP and k.lower() != "content-length"}
            if body or h.command in ("PUT", "POST", "PATCH"):
                headers["Content-Length"] = str(len(body))
            conn.request(h.command, h.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self._record(h, resp.status)
            h.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and not (k.lower() == "content-length" and h.command != "HEAD"):
                    h.send_header(k, v)
            if h.command != "HEAD":
                h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
        finally:
            conn.close()

    def close(self) -> None:
        self._go_down()
        if self._stopping is not None:
            self._stopping.join(timeout=10)


def _read_body(h: http.server.BaseHTTPRequestHandler) -> bytes:
    """The request's body: Content-Length, or chunked (the engine uploads blobs chunked)."""
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        out = bytearray()
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += h.rfile.read(size)
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


@pytest.fixture
def outage_proxy(tls_registry: TlsRegistry, tmp_path: Path) -> Iterator[OutageProxy]:
    """An OutageProxy in front of the session's TLS registry, trusted by the engine; removed afterwards."""
    proxy = OutageProxy(tls_registry, tmp_path)
    with engine_trusts(proxy.address, tls_registry.ca_file):
        proxy.start()
        try:
            yield proxy
        finally:
            proxy.close()
