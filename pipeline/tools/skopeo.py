"""skopeo adapter: copy an image registry-to-registry by digest, without a daemon and without a pull.

skopeo takes credentials in argv only through --src-creds/--dest-creds, so they go into a temporary
authfile (mode 0600, deleted right after) instead: no password ever appears in a process's argv.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import StageFailed, ToolMissing
from pipeline.tools.proc import find_tool, run
from pipeline.tools.registry_api import Credentials, is_loopback, raise_failure
from pipeline.tools.registry_errors import classify_text

FIX = "apt-get install -y skopeo"


def available() -> bool:
    try:
        find_tool("skopeo", FIX)
        return True
    except ToolMissing:
        return False


@contextmanager
def authfile(credentials: Mapping[str, Credentials]) -> Iterator[Path | None]:
    """A containers-auth.json with the given registry → credentials, 0600, removed on exit."""
    if not credentials:
        yield None
        return
    fd, name = tempfile.mkstemp(prefix="veza-auth-", suffix=".json")
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)
        auths = {addr: {"auth": base64.b64encode(f"{c.username}:{c.password}".encode()).decode()}
                 for addr, c in credentials.items()}
        with os.fdopen(fd, "w") as fh:
            json.dump({"auths": auths}, fh)
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def _tls_flags(side: str, ref: str, ca_files: Mapping[str, Path]) -> Iterator[list[str]]:
    """skopeo's TLS flags for one side: a registry with a CA file (address → file) is verified against it (a
    temporary --cert-dir holding it as ca.crt, removed on exit); otherwise loopback registries are plain http or
    self-signed (as docker treats 127.0.0.0/8) and others verify against the system store."""
    address = ref.split("/", 1)[0]
    ca = ca_files.get(address)
    if ca is None:
        yield [f"--{side}tls-verify={'false' if is_loopback(address) else 'true'}"]
        return
    with tempfile.TemporaryDirectory(prefix="veza-certs-") as d:
        shutil.copyfile(ca, Path(d) / "ca.crt")
        yield [f"--{side}tls-verify=true", f"--{side}cert-dir", d]


def copy(src: str, dst: str, *, credentials: Mapping[str, Credentials], timeout: float,
         retries: int = 0, ca_files: Mapping[str, Path] | None = None) -> None:
    """`skopeo copy --all --preserve-digests docker://src docker://dst` (src normally repo@sha256:…).
    `ca_files`: registry address → the CA file that verifies it (the environments' registry_ca_file).

    A failure is classified by the registry's error code in skopeo's message (registry_errors.classify_text):
    RegistryAuthError (UNAUTHORIZED, DENIED), RegistryUnavailable (TOOMANYREQUESTS, 429/5xx, connection
    resets: retry it), RegistryRequestError otherwise.
    """
    exe = find_tool("skopeo", FIX)
    with authfile(credentials) as auth, _tls_flags("src-", src, ca_files or {}) as src_tls, \
            _tls_flags("dest-", dst, ca_files or {}) as dst_tls:
        argv: list[str] = [exe, "copy", "--all", "--preserve-digests", *src_tls, *dst_tls]
        if auth is not None:
            argv += ["--authfile", str(auth)]
        if retries:
            argv += ["--retry-times", str(retries)]
        argv += [f"docker://{src}", f"docker://{dst}"]
        res = run(argv, timeout=timeout, check=False, what="skopeo copy")
    if not res.ok:
        _raise_classified(f"skopeo copy {src} → {dst}", res.stderr.strip() or res.stdout.strip(), res.returncode)


def _raise_classified(what: str, output: str, returncode: int) -> None:
    """skopeo's last error line → RegistryAuthError | RegistryUnavailable | RegistryRequestError, by the
    registry's error code in it (registry_errors.classify_text)."""
    tail = output.splitlines()[-1:]
    msg = tail[0] if tail else f"exit {returncode}"
    raise_failure(classify_text(msg).kind, what, msg, fix="see the message; rerun the promote",
                  auth_hint="check the registry credentials ([registry] username_env/password_env)")



@dataclass(frozen=True)
class LayoutImage:
    """The one image of an OCI layout directory: its manifest digest, media type, size, and the
    architecture/os/variant its config names."""

    digest: str
    media_type: str
    size: int
    architecture: str
    os: str
    variant: str


LAYOUT_REF = "image"


def export_oci(image_id: str, layout: Path, *, timeout: float) -> LayoutImage:
    """Copy a local engine image (by ID) into an OCI layout directory: `skopeo copy docker-daemon:<id>
    oci:<layout>:image` (layers gzip-compressed, deterministic: the same image gives the same digest).

    The engine is the one DOCKER_HOST or the docker context names (`--src-daemon-host`). StageFailed when
    skopeo fails or the layout is not readable.
    """
    from pipeline.tools.docker import engine_host

    exe = find_tool("skopeo", FIX)
    argv = [exe, "copy", "--quiet"]
    host = engine_host()
    if host:
        argv += ["--src-daemon-host", host]
        if host.startswith("tcp://") and os.environ.get("DOCKER_CERT_PATH"):
            # A TLS engine (CI's dind): the client certificate and CA of DOCKER_CERT_PATH (ca/cert/key.pem).
            argv += ["--src-cert-dir", os.environ["DOCKER_CERT_PATH"]]
    argv += [f"docker-daemon:{image_id}", f"oci:{layout}:{LAYOUT_REF}"]
    res = run(argv, timeout=timeout, check=False, what="skopeo copy (engine → OCI layout)")
    if not res.ok:
        raise StageFailed(f"skopeo could not export image {image_id[:19]} from the engine: "
                          f"{(res.stderr.strip() or res.stdout.strip()).splitlines()[-1:]}",
                          "is the image still in the engine? rerun `invoke build`")
    return read_layout(layout)


def read_layout(layout: Path) -> LayoutImage:
    """The image a layout's index.json names (OCI image-layout spec: index.json → manifest → config)."""
    try:
        entry = json.loads((layout / "index.json").read_text())["manifests"][0]
        digest = str(entry["digest"])
        manifest = json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_text())
        config_digest = str(manifest["config"]["digest"]).removeprefix("sha256:")
        config = json.loads((layout / "blobs" / "sha256" / config_digest).read_text())
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise StageFailed(f"OCI layout {layout} is not readable ({type(exc).__name__}: {exc})",
                          "rerun the push") from None
    return LayoutImage(digest, str(entry.get("mediaType") or manifest.get("mediaType") or ""), int(entry["size"]),
                       str(config.get("architecture", "")), str(config.get("os", "")), str(config.get("variant", "")))


def push_layout(layout: Path, repository: str, digest: str, *, credentials: Mapping[str, Credentials],
                timeout: float, ca_files: Mapping[str, Path] | None = None) -> None:
    """Push an OCI layout's image to `repository@digest`, by digest (no tag): `skopeo copy
    --preserve-digests oci:<layout>:image docker://<repository>@<digest>` (skopeo refuses to change the
    digest). Errors classified like copy(): RegistryAuthError, RegistryUnavailable (retry), else
    RegistryRequestError. `ca_files` as in copy()."""
    exe = find_tool("skopeo", FIX)
    dst = f"{repository}@{digest}"
    with authfile(credentials) as auth, _tls_flags("dest-", dst, ca_files or {}) as dst_tls:
        argv: list[str] = [exe, "copy", "--quiet", "--preserve-digests", *dst_tls]
        if auth is not None:
            argv += ["--authfile", str(auth)]
        argv += [f"oci:{layout}:{LAYOUT_REF}", f"docker://{dst}"]
        res = run(argv, timeout=timeout, check=False, what="skopeo copy (OCI layout → registry)")
    if not res.ok:
        _raise_classified(f"skopeo copy → {dst}", res.stderr.strip() or res.stdout.strip(), res.returncode)
