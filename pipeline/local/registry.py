"""The local OCI registry: a real CNCF distribution registry on a loopback port, storage on disk.

It runs as Debian's `docker-registry serve CONFIG.yml` (mode "binary"; the bootstrap installs the package): never as
a `registry:2` container, which would be an image pulled by a mutable tag, unsigned. A registry answering on the
port that this root did not start is reported as "external" and left alone.

Everything a registry needs lives under its root: config.yml, registry.pid, state.json, registry.log,
data/ (the blobs), auth/htpasswd, tls/. `invoke registry-up/down/status` manage the default one
(127.0.0.1:5000, one machine-wide root: embedded_registry.embedded_root); tests create their own on their own
ports.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import time
import urllib.error
import urllib.request
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageFailed, ToolMissing, UsageError
from pipeline.core.manifest import atomic_write
from pipeline.core.processes import pid_alive
from pipeline.core.redact import register_secret
from pipeline.tools import registry_server

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
START_TIMEOUT_S = 30.0
REALM = "veza-registry"


class LocalRegistry:
    """One registry process on 127.0.0.1:PORT with everything under `root`.

    `with LocalRegistry(5150, root=tmp) as reg: ... reg.address` starts it and stops it afterwards
    (only if this object started it).
    """

    def __init__(self, port: int = DEFAULT_PORT, root: Path | None = None, htpasswd: Path | None = None,
                 tls: tuple[Path, Path] | None = None, *, host: str = HOST, ca: Path | None = None) -> None:
        """`tls`: (certificate, key) files; `ca`: the CA that signed the certificate (None: it is self-signed);
        `host`: the loopback address to listen on (tests use 127.0.0.2 for a registry that is not the default)."""
        if not 1 <= port <= 65535:
            raise UsageError(f"registry port {port} is out of range", "use a port between 1 and 65535")
        from pipeline.core.paths import CACHE_DIR

        self.port = port
        self.host = host
        self.ca = ca.resolve() if ca else None
        # Without a root (a bare LocalRegistry(port)), storage goes to the machine's cache, never the work tree.
        default_root = CACHE_DIR / "registries" / f"registry-{port}"
        self.root = (root or default_root).resolve()
        self.htpasswd = htpasswd.resolve() if htpasswd else None
        self.tls = (tls[0].resolve(), tls[1].resolve()) if tls else None
        self.mode: str | None = None  # "binary" | "external", known after start()/status
        self.started_here = False
        self._proc: Any = None

    # -- where things are
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def config_file(self) -> Path:
        return self.root / "config.yml"

    @property
    def pid_file(self) -> Path:
        return self.root / "registry.pid"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def log_file(self) -> Path:
        return self.root / "registry.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def ca_file(self) -> Path | None:
        """The certificate clients should trust: the CA, else (self-signed) the certificate itself."""
        return self.ca or (self.tls[0] if self.tls else None)

    # -- lifecycle
    def start(self, timeout: float = START_TIMEOUT_S) -> LocalRegistry:
        """Start the registry and wait until /v2/ answers. Adopts one this root already runs."""
        if self.running():
            self.mode = self._state().get("mode", "binary")
            return self
        if self.answers():
            raise UsageError(f"{self.address} already answers, but not from a registry under {self.root}",
                             f"stop whatever listens on port {self.port} or pick another port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Debian's binary only (the bootstrap installs it): a `registry:2` container would run an image pulled by
        # a mutable tag, unsigned, on the machine whose registry holds every release's trust.
        self.mode = "binary"
        self.config_file.write_text(self._config_yaml())
        self._proc = registry_server.spawn_binary(self.config_file, self.log_file)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        self.started_here = True
        self._write_state()
        self._wait_ready(timeout)
        return self

    def stop(self) -> bool:
        """Stop the registry this root runs (storage is kept). Returns whether something was stopped."""
        stopped = False
        pid = self._pid()
        if pid is not None and self._pid_is_ours(pid):
            registry_server.terminate(pid)
            stopped = True
        if self._proc is not None:
            self._proc.wait(timeout=10)
            self._proc = None
        self.pid_file.unlink(missing_ok=True)
        self.started_here = False
        return stopped

    def running(self) -> bool:
        """Whether the registry under this root runs and answers."""
        pid = self._pid()
        return pid is not None and self._pid_is_ours(pid) and self.answers()

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether anything speaks the registry API on the port (200, or 401 when auth is on)."""
        return ping(self.url, cafile=self.ca_file(), timeout=timeout) is not None

    def pid(self) -> int | None:
        return self._pid()

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.started_here:
            self.stop()

    def __repr__(self) -> str:
        return f"LocalRegistry({self.address}, root={self.root}, mode={self.mode})"

    # -- internals
    def _config_yaml(self) -> str:
        """The distribution config. JSON is valid YAML: no quoting surprises with paths."""
        data_dir = str(self.data_dir)
        http: dict[str, Any] = {"addr": self.address, "headers": {"X-Content-Type-Options": ["nosniff"]}}
        if self.tls:
            http["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": data_dir}, "delete": {"enabled": True},
                        "cache": {"blobdescriptor": "inmemory"}},
            "http": http,
        }
        if self.htpasswd:
            cfg["auth"] = {"htpasswd": {"realm": REALM, "path": str(self.htpasswd)}}
        return json.dumps(cfg, indent=2) + "\n"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers(timeout=1.0):
                return
            if self._proc is not None and self._proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self._log_tail()
        self.stop()
        raise StageFailed(f"the registry on {self.address} did not come up within {timeout:.0f}s"
                          + (f": {tail}" if tail else ""),
                          f"see {self.log_file}")

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-3:])

    def _write_state(self) -> None:
        state = {"mode": self.mode, "port": self.port, "auth": self.htpasswd is not None,
                 "htpasswd": str(self.htpasswd) if self.htpasswd else None,
                 "tls": [str(p) for p in self.tls] if self.tls else None,
                 "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        atomic_write(self.state_file, json.dumps(state, indent=2) + "\n")

    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _pid_is_ours(self, pid: int) -> bool:
        """Alive, and really `docker-registry serve <our config>`: a recycled pid is never killed."""
        if not pid_alive(pid):
            return False
        argv = registry_server.pid_cmdline(pid)
        return bool(argv) and str(self.config_file) in argv and any("registry" in a for a in argv[:1])


def ping(url: str, *, cafile: Path | None = None, timeout: float = 2.0) -> int | None:
    """HTTP status of GET <url>/v2/ (200 or 401 for a live registry), None when nothing answers."""
    ctx = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    req = urllib.request.Request(f"{url}/v2/", method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code) if exc.headers.get("Docker-Distribution-Api-Version") else None
    except (OSError, ValueError):
        return None


# -- credentials and certificates for the registry's optional auth and TLS

def htpasswd_line(user: str, password: str) -> str:
    """One bcrypt htpasswd line (the only hash the distribution registry accepts)."""
    if ":" in user or not user:
        raise UsageError(f"invalid registry user name {user!r}", "use a name without ':'")
    try:
        import bcrypt

        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    except ImportError:
        # Python 3.11/3.12 stdlib fallback: glibc/libxcrypt knows bcrypt ($2b$).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt

            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024))
        if not hashed or not hashed.startswith("$2"):
            raise ToolMissing("cannot compute a bcrypt hash here", "pip install bcrypt") from None
    return f"{user}:{hashed}"


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """Write an htpasswd file (0600) for the given user → password pairs."""
    for pw in users.values():
        register_secret(pw)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(htpasswd_line(u, p) + "\n" for u, p in users.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def self_signed_cert(directory: Path, host: str = HOST) -> tuple[Path, Path]:
    """A self-signed certificate for `host` (IP SAN), valid 1 year: (cert.pem, key.pem). Reused if present."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path
