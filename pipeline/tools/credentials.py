"""Registry credentials: the env vars named in [registry], else the docker config (auths, cred helpers).

A credential helper (`docker-credential-<name> get`) receives the registry address on stdin and answers
JSON on stdout: the secret never passes through argv. Every password found is registered for redaction.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from pipeline.core.errors import UsageError
from pipeline.tools.proc import run
from pipeline.tools.registry_api import Credentials


def docker_config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))


def from_env(username_env: str, password_env: str, where: str = "") -> Credentials | None:
    """Credentials from the two environment variables; one without the other is a usage error (UsageError,
    exit 2, starting with `where`, e.g. "environment dev: registry host:port: ")."""
    user = os.environ.get(username_env, "") if username_env else ""
    pw = os.environ.get(password_env, "") if password_env else ""
    if user and pw:
        return Credentials(user, pw)
    if user or pw:
        missing = password_env if user else username_env
        raise UsageError(f"{where + ': ' if where else ''}registry credentials incomplete: {missing} is not set",
                         f"export both {username_env} and {password_env}, or neither (then: docker config)")
    return None


def from_docker_config(address: str, config_dir: Path | None = None) -> Credentials | None:
    """Credentials `docker login` stored for this registry (inline auth or a credential helper)."""
    path = (config_dir or docker_config_dir()) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    helper = (cfg.get("credHelpers") or {}).get(address) or cfg.get("credsStore")
    entry = (cfg.get("auths") or {}).get(address) or (cfg.get("auths") or {}).get(f"https://{address}")
    if entry and entry.get("auth"):
        try:
            user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if user and pw:
            return Credentials(user, pw)
    if helper:
        return _from_helper(str(helper), address)
    return None


def _from_helper(helper: str, address: str) -> Credentials | None:
    res = run([f"docker-credential-{helper}", "get"], input=address, timeout=30, check=False,
              what=f"docker-credential-{helper}")
    if not res.ok:
        return None
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        return None
    user, secret = doc.get("Username", ""), doc.get("Secret", "")
    return Credentials(user, secret) if user and secret else None


def resolve(address: str, username_env: str, password_env: str, where: str = "") -> Credentials | None:
    """Env vars first (CI), then the docker config (a developer's `docker login`); None: anonymous.
    `where` starts the error of half-set variables (from_env)."""
    return from_env(username_env, password_env, where) or from_docker_config(address)
