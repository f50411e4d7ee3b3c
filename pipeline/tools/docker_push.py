"""Pushing through the Docker engine API (plain HTTP on the local socket, else docker-py): credentials travel
in the API's X-Registry-Auth header to the daemon, never in any process's argv. Errors are classified for the
retry policy.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import Interrupted, RegistryTrustError, StageFailed
from pipeline.core.redact import redact
from pipeline.observe.tracing import call_span
from pipeline.tools import docker as engine
from pipeline.tools import engine_socket
from pipeline.tools.registry_api import Credentials, RegistryRequestError, RegistryUnavailable, raise_failure
from pipeline.tools.registry_errors import classify_text

_UNKNOWN_HOST = re.compile(r"no such host|server misbehaving|name or service not known", re.I)
# The engine's own words when it has no credentials to offer (no registry error code in them).
_NO_CREDENTIALS = re.compile(r"no basic auth credentials|authentication required", re.I)


def classify(message: str) -> str:
    """'tls' | 'auth' | 'unknown-host' | 'transient' | 'permanent' for a daemon push error message.

    By the registry's error code in the message (`toomanyrequests: …` → transient, `denied: …` → auth,
    `name unknown: …` → permanent), else the HTTP status, else network failures: registry_errors.classify_text.
    """
    if _UNKNOWN_HOST.search(message):
        return "unknown-host"
    kind = classify_text(message).kind
    if kind == "permanent" and _NO_CREDENTIALS.search(message):
        return "auth"
    return kind


def raise_classified(message: str, ref: str) -> None:
    msg = redact(message.strip())
    kind = classify(msg)
    if kind == "tls":
        address = ref.split("/", 1)[0]
        raise RegistryTrustError(f"push of {ref}: the engine does not trust registry {address}'s certificate: {msg}",
                                 f"the engine trusts a registry's CA from /etc/docker/certs.d/{address}/ca.crt "
                                 "(on the engine's host): put the CA there")
    if kind == "unknown-host":
        raise RegistryRequestError(f"push of {ref}: unknown registry host: {msg}",
                                   "check the environment's registry address in pipeline.toml")
    raise_failure(kind, f"push of {ref}", msg, fix="see the message above",
                  auth_hint="check the credentials: the env vars named in [registry] username_env/password_env, "
                            "or `docker login` (docker config)")


@dataclass(frozen=True)
class LocalImageInfo:
    id: str
    repo_digests: tuple[str, ...]


def local_image(ref: str) -> LocalImageInfo | None:
    """The local image behind ref (ID and RepoDigests), or None when absent (one inspect; plain HTTP on the
    local socket, docker-py elsewhere)."""
    info = engine.inspect(ref)
    if info is None:
        return None
    return LocalImageInfo(str(info["Id"]), tuple(info.get("RepoDigests") or ()))


def repo_digest(info: LocalImageInfo, repository: str) -> str | None:
    """The digest the engine recorded for this image in `repository` (set by an earlier push or pull)."""
    for rd in info.repo_digests:
        repo, _, digest = rd.partition("@")
        if repo == repository and digest:
            return digest
    return None


def tag(image_id: str, repository: str, tag_: str) -> None:
    engine.tag_image(image_id, repository, tag_)


@dataclass(frozen=True)
class PushedTag:
    digest: str
    engine_retries: int  # layer uploads the engine itself retried ("Retrying in N seconds")


class _LayerProgress:
    """Bytes pushed per layer, summarised for a progress line (throttled to one call per second)."""

    def __init__(self, on_progress: Callable[[str], None] | None) -> None:
        self.on_progress = on_progress
        self.layers: dict[str, tuple[int, int]] = {}
        self.done: set[str] = set()
        self.last = 0.0

    def update(self, msg: dict[str, Any]) -> None:
        if self.on_progress is None or not msg.get("id"):
            return
        layer, status = str(msg["id"]), str(msg.get("status", ""))
        detail = msg.get("progressDetail") or {}
        moved = bool(detail.get("total"))
        if moved:
            self.layers[layer] = (int(detail.get("current") or 0), int(detail["total"]))
        if status in ("Pushed", "Layer already exists") or status.startswith("Mounted from"):
            self.done.add(layer)
            moved = True
        now = time.monotonic()
        if moved and now - self.last >= 1.0:
            self.last = now
            cur = sum(c for c, _ in self.layers.values()) / 1e6
            tot = sum(t for _, t in self.layers.values()) / 1e6
            seen = len(self.layers.keys() | self.done)
            self.on_progress(f"{len(self.done)}/{seen} layers" + (f", {cur:.1f}/{tot:.1f} MB" if tot else ""))


def _push_stream(repository: str, tag_: str, auth: dict[str, Any] | None,
                 layers: _LayerProgress) -> Generator[dict[str, Any], None, None]:
    """The engine's push messages, as they come (progress reported on the way). Raises EngineAnswer when the
    engine refuses, OSError when its connection fails: the same for both ways of talking to it."""
    registry = repository.split("/", 1)[0]
    sock = engine.local_socket()
    if sock is not None and (auth is not None or not engine_socket.docker_config_has_auth(registry)):
        header = engine_socket.auth_header(auth["username"], auth["password"], registry) if auth else None
        for msg in engine_socket.push_stream(sock, repository, tag_, header):
            layers.update(msg)
            yield msg
        return
    import docker.errors
    import requests

    try:
        for msg in engine.client().api.push(repository, tag=tag_, stream=True, decode=True, auth_config=auth):
            layers.update(msg)
            yield msg
    except docker.errors.APIError as exc:
        raise engine_socket.EngineAnswer(exc.status_code or 0, str(exc.explanation or exc)) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise ConnectionError(type(exc).__name__) from None


def push_tag(repository: str, tag_: str, credentials: Credentials | None,
             on_progress: Callable[[str], None] | None = None, stop: threading.Event | None = None) -> PushedTag:
    """Push repository:tag through the engine; returns the registry digest. Raises classified errors, and
    Interrupted when `stop` is set (Ctrl-C): checked at each engine message (several a second while layers
    upload); the stream is closed, which ends the engine's push.

    on_progress receives a one-line summary of the upload while it runs ("3/7 layers, 41.2/118.0 MB"), from
    the engine's per-layer progressDetail {current, total} in bytes; at most one call per second."""
    ref = f"{repository}:{tag_}"
    auth: dict[str, Any] | None = None
    if credentials is not None:
        auth = {"username": credentials.username, "password": credentials.password,
                "serveraddress": repository.split("/", 1)[0]}
    digest = ""
    engine_retries = 0
    counting_down: dict[str, bool] = {}
    layers = _LayerProgress(on_progress)
    try:
        with call_span("engine push", **{"veza.image": ref}):
            stream = _push_stream(repository, tag_, auth, layers)
            for msg in stream:
                if stop is not None and stop.is_set():
                    stream.close()
                    raise Interrupted(f"push of {ref} stopped (Ctrl-C)",
                                      "rerun the same command: it pushes only what is missing")
                if "error" in msg or "errorDetail" in msg:
                    detail = msg.get("errorDetail") or {}
                    raise_classified(str(detail.get("message") or msg.get("error") or msg), ref)
                # The engine counts down "Retrying in 5 seconds", "… 4 seconds" per layer: count each retry once.
                retrying = str(msg.get("status", "")).startswith("Retrying in")
                layer = str(msg.get("id", ""))
                if retrying and not counting_down.get(layer):
                    engine_retries += 1
                counting_down[layer] = retrying
                aux = msg.get("aux") or {}
                if aux.get("Digest"):
                    digest = str(aux["Digest"])
                elif not digest:
                    m = re.search(r"digest: (sha256:[0-9a-f]{64})", str(msg.get("status", "")))
                    if m:
                        digest = m.group(1)
    except engine_socket.EngineAnswer as exc:
        raise_classified(exc.message, ref)
    except OSError as exc:
        raise RegistryUnavailable(f"push of {ref}: the engine connection failed: {type(exc).__name__}",
                                  "is dockerd running?") from None
    if not digest:
        raise StageFailed(f"push of {ref} ended without a digest", "rerun the push")
    return PushedTag(digest, engine_retries)
