"""The embedded default registry (127.0.0.1:5000): `invoke registry-up/down/status` and the release's "make sure
the registry it pushes to answers".

Its port is one per machine, so its root (pid, state, storage) is too: /var/lib/veza-pipeline/local/registry/<port>
as root, else ~/.local/state/veza-pipeline/registry/<port>; VEZA_REGISTRY_STATE overrides the base. Whichever
checkout started it, any checkout sees it as "started by the pipeline" and `invoke registry-down` stops it."""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import UsageError
from pipeline.local.registry import DEFAULT_PORT, LocalRegistry, ping, self_signed_cert, write_htpasswd


@dataclass
class RegistryStatus:
    running: bool
    address: str
    mode: str | None
    root: Path
    pid: int | None = None
    auth: bool = False
    tls: bool = False
    repositories: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if not self.running:
            return [f"registry: not running on {self.address} (storage: {self.root / 'data'})",
                    "start it with: invoke registry-up"]
        how = {"binary": f"docker-registry, pid {self.pid}",
               "external": "not started by the pipeline"}.get(self.mode or "", str(self.mode))
        out = [f"registry: running on {self.address} ({how})",
               f"  storage: {self.root / 'data'}",
               f"  auth: {'htpasswd' if self.auth else 'none'}   tls: {'yes' if self.tls else 'no'}"]
        if self.repositories:
            out.append(f"  repositories ({len(self.repositories)}): " + ", ".join(self.repositories))
        else:
            out.append("  repositories: none" if not self.auth else "  repositories: (needs credentials)")
        return out


def default_registry(cfg: Config, *, auth: bool = False, tls: bool = False) -> LocalRegistry:
    """The embedded default: port from [registry] address when it is loopback, root `embedded_root(port)`."""
    port = DEFAULT_PORT
    host, _, p = cfg.registry.address.partition(":")
    if host in ("127.0.0.1", "localhost") and p.isdigit():
        port = int(p)
    root = embedded_root(port)
    htpasswd = None
    if auth:
        user_env, pw_env = cfg.registry.username_env, cfg.registry.password_env
        user, pw = os.environ.get(user_env or "-", ""), os.environ.get(pw_env or "-", "")
        if not user or not pw:
            raise UsageError("registry auth needs a user name and a password",
                             f"export {user_env or 'VEZA_REGISTRY_USERNAME'} and "
                             f"{pw_env or 'VEZA_REGISTRY_PASSWORD'} first")
        htpasswd = write_htpasswd(root / "auth" / "htpasswd", {user: pw})
    cert = self_signed_cert(root / "tls") if tls else None
    return LocalRegistry(port, root=root, htpasswd=htpasswd, tls=cert)


def embedded_root(port: int) -> Path:
    """The machine-wide root of the embedded registry on loopback `port` (see the module docstring)."""
    base = os.environ.get("VEZA_REGISTRY_STATE")
    if base:
        return Path(base) / str(port)
    if os.geteuid() == 0:
        return Path("/var/lib/veza-pipeline/local/registry") / str(port)
    return Path.home() / ".local/state/veza-pipeline/registry" / str(port)


def _from_state(reg: LocalRegistry) -> LocalRegistry:
    """A LocalRegistry object configured like the one its root last started (auth/tls)."""
    st = reg._state()
    htp = Path(st["htpasswd"]) if st.get("htpasswd") else None
    tls = (Path(st["tls"][0]), Path(st["tls"][1])) if st.get("tls") else None
    out = LocalRegistry(reg.port, root=reg.root, htpasswd=htp, tls=tls)
    out.mode = st.get("mode")
    return out


def registry_up(cfg: Config, auth: bool = False, tls: bool = False) -> RegistryStatus:
    """Start the default registry (idempotent); print where it runs and which path was taken."""
    probe = _from_state(default_registry(cfg))
    if probe.running():
        st = registry_status(cfg, quiet=True)
        if st.auth != auth or st.tls != tls:
            raise UsageError(f"the registry on {probe.address} already runs with auth={st.auth} tls={st.tls}",
                             "run `invoke registry-down` first to restart it with other settings")
        print(f"registry: already running on {probe.address} ({probe.mode}); nothing to do")
        return st
    if probe.answers() or ping(f"https://{probe.address}", timeout=1.0) is not None:
        print(f"registry: {probe.address} already answers (not started by the pipeline); using it as is")
        return registry_status(cfg, quiet=True)
    reg = default_registry(cfg, auth=auth, tls=tls).start()
    print(f"registry: started on {reg.url} via Debian's docker-registry binary (storage {reg.data_dir})")
    return registry_status(cfg, quiet=True)


def registry_down(cfg: Config) -> bool:
    """Stop the default registry if the pipeline started it; its storage is kept."""
    reg = _from_state(default_registry(cfg))
    if reg.stop():
        print(f"registry: stopped {reg.address} (storage kept in {reg.data_dir})")
        return True
    if reg.answers():
        print(f"registry: {reg.address} answers but was not started by the pipeline; left alone")
    else:
        print(f"registry: not running on {reg.address}")
    return False


def registry_status(cfg: Config, quiet: bool = False) -> RegistryStatus:
    reg = _from_state(default_registry(cfg))
    st = RegistryStatus(running=False, address=reg.address, mode=None, root=reg.root)
    if reg.running():
        st.running, st.mode, st.pid = True, reg.mode, reg.pid()
        st.auth, st.tls = reg.htpasswd is not None, reg.tls is not None
    else:
        code = ping(f"http://{reg.address}", timeout=1.0)
        tls_code = None if code is not None else ping_insecure_tls(reg.address)
        if code is not None or tls_code is not None:
            st.running, st.mode = True, "external"
            st.auth, st.tls = (code or tls_code) == 401, tls_code is not None
    if st.running and not st.auth:
        st.repositories = _catalog(reg)
    if not quiet:
        for line in st.lines():
            print(line)
    return st


def ping_insecure_tls(address: str) -> int | None:
    """Status of /v2/ over TLS without verification: only used to recognise a registry, never to send data."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://{address}/v2/", timeout=1.0, context=ctx) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def _catalog(reg: LocalRegistry) -> list[str]:
    ctx = ssl.create_default_context(cafile=str(reg.ca_file())) if reg.ca_file() else None
    try:
        with urllib.request.urlopen(f"{reg.url}/v2/_catalog?n=1000", timeout=5, context=ctx) as r:
            repos = json.loads(r.read()).get("repositories") or []
            return [str(x) for x in repos]
    except (OSError, ValueError):
        return []


def ensure_local_registry(cfg: Config, address: str | None = None) -> RegistryStatus | None:
    """Make sure the registry a release pushes to answers, starting the embedded default when needed.

    `address` is the target registry (host:port); a non-loopback or non-default one is never started here
    (None is returned: it is the user's registry). Called by the release before the push pre-flight.
    """
    reg = _from_state(default_registry(cfg))
    if address is not None and address not in (reg.address, f"localhost:{reg.port}"):
        return None
    if reg.running() or reg.answers() or ping_insecure_tls(reg.address) is not None:
        return registry_status(cfg, quiet=True)
    return registry_up(cfg)
