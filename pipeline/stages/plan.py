"""The build plan (pure: no engine calls): per service its repository, tags, input digest and action.

The input digest is a hash of everything that goes into the image: the Dockerfile, the build context after
.dockerignore (paths, modes and contents), the build arguments that shape the content, and the base image
references resolved to image IDs. Build info that changes on every commit (VERSION, REVISION, CREATED) is
deliberately left out: an image is identified by its content (as werf does), so a commit that touches one
service rebuilds that service only; the OCI labels of a reused image name the commit that produced it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.config import Config, Environment, Service

# Build args that carry build metadata, not content: excluded from the input digest.
VOLATILE_ARGS = frozenset({"VERSION", "REVISION", "CREATED", "SOURCE"})
DIGEST_SCHEME = "v1"


@dataclass(frozen=True)
class ServicePlan:
    service: Service
    repository: str
    tags: tuple[str, ...]
    input_digest: str
    build_args: Mapping[str, str]
    action: str = "build"          # build | reuse | skip
    reason: str = ""
    existing_image: str | None = None
    base_images: Mapping[str, str] = field(default_factory=dict)   # base reference → image ID (provenance)

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def refs(self) -> list[str]:
        return [f"{self.repository}:{t}" for t in self.tags]


@dataclass(frozen=True)
class BuildPlan:
    env: Environment
    services: tuple[ServicePlan, ...]
    version: Mapping[str, object] = field(default_factory=dict)


def dockerignore_patterns(context: Path) -> list[str]:
    f = context / ".dockerignore"
    if not f.exists():
        return []
    return [ln.strip() for ln in f.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]


def context_files(context: Path, dockerfile: Path) -> list[str]:
    """The files the engine receives, after .dockerignore (Docker's own matching rules, via docker-py)."""
    from docker.utils.build import exclude_paths

    df = os.path.relpath(dockerfile, context) if dockerfile.is_relative_to(context) else None
    included = exclude_paths(str(context), dockerignore_patterns(context), dockerfile=df)
    return sorted(p for p in included if (context / p).is_file() or (context / p).is_symlink())


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_symlink():
        h.update(os.readlink(path).encode())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_digest(service: Service, build_args: Mapping[str, str], base_ids: Mapping[str, str]) -> str:
    """sha256 over Dockerfile, filtered context, content-shaping build args and resolved base image IDs."""
    h = hashlib.sha256()

    def put(*parts: str) -> None:
        for p in parts:
            h.update(p.encode())
            h.update(b"\0")

    put("scheme", DIGEST_SCHEME)
    put("dockerfile", _file_digest(service.dockerfile))
    for rel in context_files(service.context, service.dockerfile):
        p = service.context / rel
        mode = stat.S_IMODE(p.lstat().st_mode) & 0o111  # only the executable bits reach the image
        put("file", rel, oct(mode), _file_digest(p))
    for k in sorted(build_args):
        if k not in VOLATILE_ARGS:
            put("arg", k, build_args[k])
    for ref in sorted(base_ids):
        put("base", ref, base_ids[ref])
    return "sha256:" + h.hexdigest()


def base_build_args(cfg: Config, service: Service, use_local: Mapping[str, bool]) -> dict[str, str]:
    """Build args that point the Dockerfile at its base images: the local equivalents where upstream is absent."""
    args: dict[str, str] = {}
    for bname in service.bases:
        base = cfg.bases[bname]
        if base.build_arg:
            args[base.build_arg] = base.local if use_local.get(bname, True) else base.upstream
    return args
