"""Docker engine adapter: the engine that DOCKER_HOST or the current docker context points to.

Queries and tagging go through the Engine API (docker-py: fast, no process per call); builds go through the
docker CLI so they behave exactly like a developer's `docker build`: BuildKit via buildx where the plugin exists,
the legacy builder otherwise (TOOLCHAIN.md: no buildx on Debian bookworm).
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from pipeline.core.errors import StageFailed, ToolMissing
from pipeline.tools import proc


def engine_host() -> str | None:
    """DOCKER_HOST, else the current docker context's endpoint (None: the default socket)."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    try:
        from docker.context import ContextAPI

        ctx = ContextAPI.get_current_context()
        host = ctx.Host if ctx is not None else None
        return str(host) if host and ctx.Name != "default" else None
    except Exception:
        return None


@functools.lru_cache(maxsize=1)
def client() -> Any:
    """A docker-py client for the configured engine; ToolMissing when no engine answers."""
    import docker

    host = engine_host()
    try:
        if host and not os.environ.get("DOCKER_HOST"):
            c = docker.DockerClient(base_url=host, timeout=300)
        elif os.environ.get("DOCKER_TLS_VERIFY") and os.environ.get("DOCKER_CERT_PATH"):
            c = _tls_client()
        else:
            c = docker.from_env(timeout=300)
        c.ping()
    except Exception as exc:
        raise ToolMissing(f"no Docker engine answers at {host or 'the default socket'} ({type(exc).__name__})",
                          "start dockerd (python3 -m pipeline.machine.bootstrap) or fix DOCKER_HOST / docker context",
                          ) from None
    return c


def _tls_client() -> Any:
    """A client of a TCP+TLS engine (CI's dind: DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH).

    requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace the session's CA (the engine's ca.pem) on every call,
    so a machine whose environment names its own CA bundle could never verify the engine: the session ignores
    the environment (trust_env off), and the API version is asked only after that.
    """
    import docker
    from docker.utils import kwargs_from_env

    c = docker.DockerClient(timeout=300, version="1.24", **kwargs_from_env())   # 1.24: the oldest docker-py knows
    c.api.trust_env = False
    c.api._version = c.api._retrieve_server_version()
    return c


@dataclass(frozen=True)
class LocalImage:
    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    digests: tuple[str, ...] = ()   # the engine's RepoDigests (`repository@sha256:…` it was pulled or pushed as)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def _local_socket() -> str | None:
    """The engine's unix socket when the engine is the local default one (else None: use docker-py)."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host.removeprefix("unix://") if host.startswith("unix://") else None
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        context = json.loads(config.read_text()).get("currentContext")
    except (OSError, ValueError):
        context = None
    return "/var/run/docker.sock" if context in (None, "", "default") else None


def _socket_call(sock: str, method: str, path: str) -> tuple[int, bytes]:
    """One Engine API request over the local unix socket: (HTTP status, body). ToolMissing when no engine answers."""
    conn = _UnixHTTPConnection(sock, timeout=60)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError as exc:
        raise ToolMissing(f"no Docker engine answers at {sock} ({exc.strerror or exc})",
                          "start dockerd (python3 -m pipeline.machine.bootstrap) or fix DOCKER_HOST / docker context",
                          ) from None
    finally:
        conn.close()


def _inspect(ref: str) -> dict[str, Any] | None:
    """GET /images/{ref}/json. On the local socket this is plain HTTP: no-op builds skip importing docker-py."""
    sock = _local_socket()
    if sock is None:
        import docker.errors

        try:
            return dict(client().api.inspect_image(ref))
        except docker.errors.ImageNotFound:
            return None
    status, body = _socket_call(sock, "GET", f"/images/{quote(ref, safe='/:@')}/json")
    if status == 404:
        return None
    if status != 200:
        raise StageFailed(f"the engine answered {status} to inspect {ref}: {body[:200]!r}")
    return dict(json.loads(body))


def inspect(ref: str) -> dict[str, Any] | None:
    """The engine's inspect of a local image (GET /images/{ref}/json), or None when absent."""
    return _inspect(ref)


def local_socket() -> str | None:
    """The engine's unix socket when it is the local default engine, else None (then docker-py is used)."""
    return _local_socket()


def image_id(ref: str) -> str | None:
    """The ID of a local image (by name, tag or ID), or None when absent."""
    info = _inspect(ref)
    return str(info["Id"]) if info else None


def image_facts(ref: str) -> tuple[str, dict[str, str], tuple[str, ...]] | None:
    """(ID, labels, local tags "repo:tag") of a local image, or None when absent: one inspect call."""
    info = _inspect(ref)
    if info is None:
        return None
    return (str(info["Id"]), dict((info.get("Config") or {}).get("Labels") or {}),
            tuple(str(t) for t in info.get("RepoTags") or ()))


def inspect_image(ref: str) -> dict[str, Any]:
    return dict(client().api.inspect_image(ref))


def tag_image(image: str, repository: str, tag: str) -> None:
    """Tag a local image (POST /images/{image}/tag): plain HTTP on the local socket, docker-py elsewhere."""
    sock = _local_socket()
    if sock is None:
        client().api.tag(image, repository, tag, force=True)
        return
    status, body = _socket_call(sock, "POST",
                                f"/images/{quote(image, safe='/:@')}/tag?{urlencode({'repo': repository, 'tag': tag})}")
    if status not in (200, 201):
        raise StageFailed(f"the engine answered {status} to tag {image} as {repository}:{tag}: {body[:200]!r}")


def build_image(
    *,
    context: Path,
    dockerfile: Path,
    tags: list[str],
    build_args: Mapping[str, str],
    labels: Mapping[str, str],
    no_cache: bool,
    on_line: Callable[[str], None],
    timeout: float,
    iidfile: Path,
    stop: threading.Event | None = None,
) -> int:
    """Build a plain Dockerfile (base recipes, the pause image) with buildx where it exists, else the legacy
    builder (the Dockerfiles of the services go through pipeline.tools.buildkit), streaming each output line;
    returns the exit code. The image ID lands in iidfile."""
    from pipeline.tools import buildkit

    builder = recipe_builder()
    argv, env = buildkit.build_argv(builder, context=context, dockerfile=dockerfile, tags=tags,
                                    build_args=build_args, labels=labels, no_cache=no_cache, iidfile=iidfile)
    return proc.stream(argv, timeout=timeout, on_line=on_line, env=env or None, stop=stop)


def recipe_builder() -> Any:
    """The builder build_image uses (a pipeline.tools.buildkit.Builder): buildx where it exists, else legacy."""
    from pipeline.tools import buildkit

    builder = buildkit.detect("auto")
    return builder if builder.kind == "buildx" else buildkit.detect("legacy")


# ---------------------------------------------------------------- base images (pipeline/local/bases.py)

def engine_version() -> str:
    """The engine's version ("" when it does not say)."""
    try:
        return str(client().version().get("Version") or "")
    except Exception:   # an absent engine fails the build itself, with its own message
        return ""


def cli_version() -> str:
    """The docker CLI's client version ("" when it does not answer)."""
    res = proc.run(["docker", "version", "--format", "{{.Client.Version}}"], timeout=20, check=False)
    return res.stdout.strip() if res.ok else ""


def image_packages(ref: str, *, run_id: str, timeout: float) -> list[str]:
    """The Debian packages installed in a local image, `name=version` (dpkg-query inside a throwaway container:
    as root, no network, labelled with the run); StageFailed when the image has no dpkg or the run fails."""
    from pipeline.core.vocab import LABEL_RUN

    res = proc.run(["docker", "run", "--rm", "--network", "none", "--user", "0", "--label", f"{LABEL_RUN}={run_id}",
                    "--entrypoint", "dpkg-query", ref, "-W", "-f=${binary:Package}=${Version}\\n"],
                   timeout=timeout, check=False, what=f"dpkg-query in {ref}")
    if not res.ok:
        raise StageFailed(f"cannot list the Debian packages of {ref}: {res.stderr.strip()[-200:]}",
                          "the image needs dpkg (every recipe builds on the local Debian base)")
    return res.stdout.splitlines()


def local_images() -> list[LocalImage]:
    """Every local image with its tags and labels, in one API call (cheap enough for a < 2 s no-op rerun)."""
    out = []
    for img in client().api.images():
        tags = tuple(t for t in (img.get("RepoTags") or []) if t != "<none>:<none>")
        digests = tuple(d for d in (img.get("RepoDigests") or []) if not d.startswith("<none>"))
        out.append(LocalImage(img["Id"], tags, img.get("Labels") or {}, digests))
    return out


def pull_image(ref: str, *, timeout: float, username: str = "", password: str = "") -> tuple[bool, str]:
    """Try `docker pull ref`; (ok, one-line reason). Never raises for a registry that cannot be reached.

    With `username`/`password` (a registry the pipeline holds credentials for: a fresh CI runner has no
    `docker login`), the pull goes through the Engine API (docker-py), the credentials in its X-Registry-Auth
    header, never argv (https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Image/operation/ImageCreate).
    """
    if username and password:
        return _pull_with_auth(ref, username, password)
    try:
        res = proc.run(["docker", "pull", "--quiet", ref], timeout=timeout, check=False,
                       what=f"docker pull {ref}")
    except StageFailed as exc:  # the timeout: a network that drops packets instead of refusing them
        return False, exc.message
    lines = (res.stderr.strip() or res.stdout.strip()).splitlines()
    return res.ok, (lines[-1] if lines else f"exit {res.returncode}")


def split_pull_ref(ref: str) -> tuple[str, str | None]:
    """(repository, tag or digest) as the Engine API's image create takes them (`fromImage`, `tag`): "r@sha256:…"
    → ("r", "sha256:…"), "host:5000/r:t" → ("host:5000/r", "t"), "r" → ("r", None)."""
    repository, at, digest = ref.partition("@")
    if at:
        return repository, digest
    if ":" in repository.rsplit("/", 1)[-1]:
        name, _, tag = repository.rpartition(":")
        return name, tag
    return repository, None


def _pull_with_auth(ref: str, username: str, password: str) -> tuple[bool, str]:
    """pull_image through the Engine API with these credentials: (ok, one-line reason). Each engine message waits
    at most docker-py's client timeout (300 s)."""
    import docker.errors
    import requests

    from pipeline.core.redact import redact

    repository, tag = split_pull_ref(ref)
    auth = {"username": username, "password": password, "serveraddress": repository.split("/", 1)[0]}
    try:
        for msg in client().api.pull(repository, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in msg or "errorDetail" in msg:
                detail = msg.get("errorDetail") or {}
                return False, redact(str(detail.get("message") or msg.get("error") or msg)).strip()
    except docker.errors.APIError as exc:
        return False, redact(str(exc.explanation or exc)).strip()
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        return False, f"the engine connection failed: {type(exc).__name__}"
    return True, f"pulled {ref}"


def import_rootfs(tarball: Path, ref: str, *, changes: list[str], timeout: float) -> str:
    """`docker import` a rootfs tarball as ref with Dockerfile changes (LABEL, ENV, CMD); its image ID."""
    argv: list[str] = ["docker", "import"]
    for ch in changes:
        argv += ["--change", ch]
    argv += [str(tarball), ref]
    res = proc.run(argv, timeout=timeout, what=f"docker import {ref}")
    return res.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------- cache hygiene (pipeline/machine/prune.py)

@dataclass(frozen=True)
class CacheRecord:
    """One record of the engine's BuildKit cache (`GET /system/df`): ID, bytes, in use, last use (ISO time)."""

    id: str
    size: int
    in_use: bool
    last_used: str
    description: str


def build_cache_records(timeout: float = 120) -> list[CacheRecord]:
    """Every BuildKit cache record the engine holds (empty when the engine has no BuildKit cache)."""
    df = client().api.df()
    return [CacheRecord(str(r.get("ID")), int(r.get("Size") or 0), bool(r.get("InUse")),
                        str(r.get("LastUsedAt") or r.get("CreatedAt") or ""), str(r.get("Description") or ""))
            for r in (df.get("BuildCache") or [])]


def prune_build_cache(keep_bytes: int) -> int:
    """Trim the engine's build cache to keep_bytes, least recently used first (`POST /build/prune`); bytes freed."""
    res = client().api.prune_builds(keep_storage=keep_bytes)
    return int((res or {}).get("SpaceReclaimed") or 0)


def images_with_label(*labels: str, dangling: bool | None = None) -> list[dict[str, Any]]:
    """Local images carrying every one of `labels` (key or key=value), optionally only dangling (untagged) ones."""
    filters: dict[str, Any] = {"label": list(labels)}
    if dangling is not None:
        filters["dangling"] = dangling
    return list(client().api.images(filters=filters))


def remove_image(ref: str) -> str | None:
    """Remove a tag (or an untagged image by ID) without force; None when done, else the engine's reason."""
    import docker.errors

    try:
        client().api.remove_image(ref, force=False, noprune=False)
        return None
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        return str(exc.explanation or exc)


# ---------------------------------------------------------------- objects a run created (by label)

@dataclass(frozen=True)
class Labelled:
    containers: tuple[str, ...]
    networks: tuple[str, ...]
    volumes: tuple[str, ...]

    def empty(self) -> bool:
        return not (self.containers or self.networks or self.volumes)

    def describe(self) -> str:
        parts = [f"{k}: {', '.join(v)}" for k, v in
                 (("containers", self.containers), ("networks", self.networks), ("volumes", self.volumes)) if v]
        return "; ".join(parts) or "nothing"


def labelled(label: str, value: str) -> Labelled:
    """Every container, network and volume carrying label=value, asked from the engine itself (API, in-process)."""
    # The low-level listings: docker-py's high-level list() inspects each container afterwards, which
    # races with a teardown removing them (NotFound).
    api = client().api
    flt = {"label": f"{label}={value}"}
    return Labelled(
        containers=tuple(sorted(str(x["Names"][0]).lstrip("/") for x in api.containers(all=True, filters=flt))),
        networks=tuple(sorted(str(x["Name"]) for x in api.networks(filters=flt))),
        volumes=tuple(sorted(str(x["Name"]) for x in (api.volumes(filters=flt).get("Volumes") or []))),
    )


def remove_labelled(label: str, value: str, *, volumes: bool = True) -> Labelled:
    """Force-remove what label=value still holds (containers, then networks, then volumes).

    Engine API calls from this process, not a CLI: a second Ctrl-C in the terminal cannot interrupt them
    half-way. Objects that vanish meanwhile (a concurrent cleanup) are fine. Returns what remains.
    """
    import docker.errors

    c = client()
    flt = {"label": f"{label}={value}"}
    for ctr in c.containers.list(all=True, filters=flt):
        try:
            ctr.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
    for net in c.networks.list(filters=flt):
        try:
            net.remove()
        except docker.errors.NotFound:
            pass
    for vol in c.volumes.list(filters=flt) if volumes else []:
        try:
            vol.remove(force=True)
        except docker.errors.NotFound:
            pass
    return labelled(label, value)


def container_state(container: str) -> dict[str, Any]:
    """The engine's .State of a container ({} when it is gone): status, exit code, health log, error."""
    import docker.errors

    try:
        return dict(client().api.inspect_container(container).get("State") or {})
    except docker.errors.NotFound:
        return {}
