"""Engine API calls that stream, over the local engine's unix socket without docker-py (its import alone
took 0.2–0.45 s here, a large part of a one-image `invoke push`).

Used only where the plain socket is exactly what docker-py would do: the engine is the local default one
(pipeline.tools.docker's socket choice) and either the pipeline hands its own credentials, or the docker
config holds none that docker-py would have sent for that registry (no `auths` entry, credential helper or
credential store). Anything else returns None from `push_stream`, and the caller uses docker-py.

Engine API: `POST /images/{name}/push?tag=T`, header `X-Registry-Auth` = URL-safe base64 of the JSON auth
config (https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Image/operation/ImagePush); the answer
is a stream of JSON messages (status, progressDetail, aux.Digest, error/errorDetail).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

PUSH_READ_TIMEOUT_S = 300.0    # between two messages of the engine (docker-py's client used the same)


class EngineAnswer(Exception):
    """The engine refused the request: HTTP `status`, its `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def docker_config_has_auth(registry: str, config_dir: Path | None = None) -> bool:
    """Whether the docker config (DOCKER_CONFIG or ~/.docker) names credentials docker-py would send for
    `registry` (host[:port]): an `auths` entry for it, a `credHelpers` entry, or any `credsStore`.
    An unreadable or malformed config counts as "has auth" (docker-py decides then)."""
    path = (config_dir or Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))) / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True
    if not isinstance(data, dict):
        return True
    if data.get("credsStore") or registry in (data.get("credHelpers") or {}):
        return True
    for key in data.get("auths") or {}:
        host = str(key).removeprefix("https://").removeprefix("http://").split("/", 1)[0]
        if host == registry:
            return True
    return False


def auth_header(username: str, password: str, registry: str) -> str:
    """X-Registry-Auth for these credentials (they travel to the daemon in this header, never in argv)."""
    body = json.dumps({"username": username, "password": password, "serveraddress": registry})
    return base64.urlsafe_b64encode(body.encode()).decode()


def push_stream(sock: str, repository: str, tag: str, header: str | None) -> Iterator[dict[str, Any]]:
    """The engine's push messages for repository:tag, as they come. Raises EngineAnswer for an HTTP error
    answer, OSError (ConnectionError, TimeoutError…) when the engine connection fails."""
    from pipeline.tools.docker import _UnixHTTPConnection

    conn = _UnixHTTPConnection(sock, timeout=PUSH_READ_TIMEOUT_S)
    try:
        headers = {"Content-Type": "application/json"}
        if header:
            headers["X-Registry-Auth"] = header
        conn.request("POST", f"/images/{quote(repository, safe='/:@')}/push?{urlencode({'tag': tag})}",
                     body=b"{}", headers=headers)   # docker-py sends the same empty JSON body
        resp = conn.getresponse()
        if resp.status != 200:
            body = resp.read().decode("utf-8", "replace")
            try:
                message = str(json.loads(body).get("message") or body)
            except ValueError:
                message = body
            raise EngineAnswer(resp.status, message.strip())
        yield from json_messages(iter(lambda: resp.readline(), b""))
    finally:
        conn.close()


def json_messages(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """JSON objects from the engine's stream (one or more per line, as the engine writes them)."""
    decoder = json.JSONDecoder()
    buffer = ""
    for raw in lines:
        buffer += raw.decode("utf-8", "replace")
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                obj, end = decoder.raw_decode(buffer)
            except ValueError:
                break     # an object cut across reads: wait for the rest
            buffer = buffer[end:]
            if isinstance(obj, dict):
                yield obj
