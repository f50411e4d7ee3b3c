"""skopeo adapter: copy an image registry-to-registry by digest, without a daemon and without a pull.

skopeo takes credentials in argv only through --src-creds/--dest-creds, so they go into a temporary
authfile (mode 0600, deleted right after) instead: no password ever appears in a process's argv.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pipeline.core.errors import RegistryAuthError, ToolMissing
from pipeline.tools.proc import find_tool, run
from pipeline.tools.registry_api import Credentials, RegistryRequestError, RegistryUnavailable, is_loopback
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


def _tls_flag(side: str, ref: str) -> str:
    """Loopback registries are plain http or self-signed (as docker treats 127.0.0.0/8)."""
    host = ref.split("/", 1)[0]
    return f"--{side}tls-verify={'false' if is_loopback(host) else 'true'}"


def copy(src: str, dst: str, *, credentials: Mapping[str, Credentials], timeout: float,
         retries: int = 0) -> None:
    """`skopeo copy --all --preserve-digests docker://src docker://dst` (src normally repo@sha256:…).

    A failure is classified by the registry's error code in skopeo's message (registry_errors.classify_text):
    RegistryAuthError (UNAUTHORIZED, DENIED), RegistryUnavailable (TOOMANYREQUESTS, 429/5xx, connection
    resets: retry it), RegistryRequestError otherwise.
    """
    exe = find_tool("skopeo", FIX)
    with authfile(credentials) as auth:
        argv: list[str] = [exe, "copy", "--all", "--preserve-digests", _tls_flag("src-", src),
                           _tls_flag("dest-", dst)]
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
    kind = classify_text(msg).kind
    if kind == "auth":
        raise RegistryAuthError(f"{what} refused: {msg}",
                                "check the registry credentials ([registry] username_env/password_env)")
    if kind == "transient":
        raise RegistryUnavailable(f"{what}: {msg}", "retry later")
    raise RegistryRequestError(f"{what} failed: {msg}", "see the message; rerun the promote")

