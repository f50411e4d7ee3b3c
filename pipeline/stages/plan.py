"""The build plan (pure: no engine calls): per service its repository, tags, input digest and action.

The input digest is a hash of everything that goes into the image: the Dockerfile, the build context after
.dockerignore (paths, modes and contents), the build arguments that shape the content, the base image
references resolved to image IDs, and the platform list when it is not the machine's platform alone (a
single native image is already pinned to its architecture by its base image IDs). Build info that changes
on every commit (VERSION, REVISION, CREATED) is deliberately left out: an image is identified by its content
(as werf does), so a commit that touches one service rebuilds that service only; the OCI labels of a reused
image name the commit that produced it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.config import Config, Environment, Service
from pipeline.core.platforms import Platform
from pipeline.stages import buildcontext
from pipeline.stages.buildcontext import BUILDKIT_CLASSIC, ContextRules
from pipeline.stages.registry_reuse import RegistryImage
from pipeline.tools.buildkit import Builder

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
    why: str = ""                  # what changed since the image it would otherwise reuse ("main.go modified")
    inputs: InputRecord | None = None
    base_images: Mapping[str, str] = field(default_factory=dict)   # base reference → image ID (provenance)
    platforms: tuple[Platform, ...] = ()   # built for these (one image each); () = the machine's platform
    platforms_from: str = "native"         # service | environment | native (where the list comes from)
    existing_children: Mapping[str, str] = field(default_factory=dict)   # platform → local image ID (reuse)
    existing_tags: tuple[str, ...] = ()    # the reused image's local tags when the plan looked (RepoTags)
    registry_image: RegistryImage | None = None   # reuse from the environment's registry (registry_reuse.py)
    registry_note: str = ""                # built: why the registry had no image for it, when it was asked

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
    builder: Builder | None = None         # the builder that will run (its kind decides the context rules)


def context_files(context: Path, dockerfile: Path, rules: ContextRules = BUILDKIT_CLASSIC) -> list[str]:
    """The files the engine receives, after `.dockerignore` as the given sender applies it (buildcontext.py)."""
    return buildcontext.context_files(context, dockerfile, rules)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_symlink():
        h.update(os.readlink(path).encode())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _secret_safe(value: str) -> str:
    """A build argument's value as recorded on disk: its hash (values may be sensitive)."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class InputRecord:
    """Everything that went into one image, itemised (kept per service to explain the next rebuild).

    files: context path → "<exec bits octal>:<sha256>"; args: content-shaping build argument → hash of its
    value; bases: base reference → image ID; dockerfile: sha256 of the Dockerfile; digest: the input digest;
    platforms: the platform list ("os/arch[/variant]") when it is not the machine's platform alone.
    """

    digest: str
    dockerfile: str
    files: Mapping[str, str]
    args: Mapping[str, str]
    bases: Mapping[str, str]
    platforms: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"digest": self.digest, "dockerfile": self.dockerfile, "files": dict(self.files),
                                  "args": dict(self.args), "bases": dict(self.bases)}
        if self.platforms:
            out["platforms"] = list(self.platforms)
        return out

    @staticmethod
    def from_json(data: Mapping[str, object]) -> InputRecord:
        def strmap(key: str) -> dict[str, str]:
            raw = data.get(key) or {}
            return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

        plats = data.get("platforms") or []
        return InputRecord(str(data["digest"]), str(data.get("dockerfile", "")), strmap("files"), strmap("args"),
                           strmap("bases"), tuple(str(p) for p in plats) if isinstance(plats, list) else ())


def input_record(service: Service, build_args: Mapping[str, str], base_ids: Mapping[str, str],
                 rules: ContextRules = BUILDKIT_CLASSIC, platforms: tuple[Platform, ...] = ()) -> InputRecord:
    """Hash the Dockerfile, the context as `rules` sends it, content-shaping build args and base image IDs.

    The digest is sha256 over, in order: the scheme, the Dockerfile's hash, each context file (path,
    executable bits, content hash), each build argument not in VOLATILE_ARGS, each base reference and ID,
    then each platform of `platforms` in the given order (none for a native-only build, whose digest is
    therefore the same as before platforms existed).
    """
    h = hashlib.sha256()

    def put(*parts: str) -> None:
        for p in parts:
            h.update(p.encode())
            h.update(b"\0")

    put("scheme", DIGEST_SCHEME)
    dockerfile = _file_digest(service.dockerfile)
    put("dockerfile", dockerfile)
    files: dict[str, str] = {}
    for rel in context_files(service.context, service.dockerfile, rules):
        p = service.context / rel
        mode = oct(stat.S_IMODE(p.lstat().st_mode) & 0o111)  # only the executable bits reach the image
        content = _file_digest(p)
        put("file", rel, mode, content)
        files[rel] = f"{mode}:{content}"
    args: dict[str, str] = {}
    for k in sorted(build_args):
        if k not in VOLATILE_ARGS:
            put("arg", k, build_args[k])
            args[k] = _secret_safe(build_args[k])
    for ref in sorted(base_ids):
        put("base", ref, base_ids[ref])
    for plat in platforms:
        put("platform", str(plat))
    return InputRecord("sha256:" + h.hexdigest(), dockerfile, files, args, dict(base_ids),
                       tuple(str(p) for p in platforms))


def input_digest(service: Service, build_args: Mapping[str, str], base_ids: Mapping[str, str],
                 rules: ContextRules = BUILDKIT_CLASSIC, platforms: tuple[Platform, ...] = ()) -> str:
    """sha256 over Dockerfile, filtered context, content-shaping build args, resolved base image IDs and
    the platform list (input_record)."""
    return input_record(service, build_args, base_ids, rules, platforms).digest


def base_build_args(cfg: Config, service: Service, use_local: Mapping[str, bool]) -> dict[str, str]:
    """Build args that point the Dockerfile at its base images: the local equivalents where upstream is absent."""
    args: dict[str, str] = {}
    for bname in service.bases:
        base = cfg.bases[bname]
        if base.build_arg:
            args[base.build_arg] = base.local if use_local.get(bname, True) else base.upstream
    return args
