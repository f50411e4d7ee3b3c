"""Multi-platform builds: which platforms a service is built for, the builder check, and the local images of
each platform (the engine's classic image store holds one platform per tag, so each platform's image is its
own local image, found by a cache tag that names the input digest and the platform).

The native-only path is the one that existed before: one image, no `--platform`, cache tag `in-<digest>`.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.core.config import Environment, Service
from pipeline.core.errors import UsageError
from pipeline.core.platforms import Platform, effective_platforms, native_platform, primary_platform
from pipeline.core.vocab import CACHE_REPO, LABEL_INPUT_DIGEST, carries_build_stamp
from pipeline.tools import buildkit, docker


def cache_ref(service: str, digest: str, platform: Platform | None = None) -> str:
    """A local tag naming an image by its input digest (and, for a multi-platform build's non-primary
    children, its platform): finding it is one inspect, not an image listing."""
    suffix = f"-{platform.slug}" if platform is not None else ""
    return f"{CACHE_REPO}/{service}:in-{digest.removeprefix('sha256:')[:32]}{suffix}"


def find_by_input_digest(service: str, digest: str, platform: Platform | None = None) -> str | None:
    """The local image built from exactly these inputs (its label must agree with the cache tag, and it must carry
    its build's facts), or None."""
    found = find_with_tags(service, digest, platform)
    return found[0] if found else None


def find_with_tags(service: str, digest: str, platform: Platform | None = None) -> tuple[str, tuple[str, ...]] | None:
    """(image ID, its local tags "repo:tag") of the image built from exactly these inputs for `platform` (None:
    the single-platform image or the primary child), or None: one inspect, whose tags spare a no-op build the
    tag calls the engine already has."""
    found = docker.image_facts(cache_ref(service, digest, platform))
    if found is None:
        return None
    image_id, labels, tags = found
    return (image_id, tags) if labels.get(LABEL_INPUT_DIGEST) == digest and carries_build_stamp(labels) else None


def service_platforms(service: Service, env: Environment,
                      native: Platform | None = None) -> tuple[tuple[Platform, ...], str]:
    """(platforms, source) of `service` in `env`: () when it is built for this machine's platform alone (the
    single-image path), else every platform in order; source names where the list comes from: "service" |
    "environment" | "native" (no list anywhere)."""
    native = native or native_platform()
    plats, source = effective_platforms(service.platforms, env.platforms, native)
    return (() if plats == (native,) else plats), source


def check_builder(service: Service, env: Environment, platforms: tuple[Platform, ...], source: str,
                  builder: buildkit.Builder, native: Platform | None = None) -> None:
    """UsageError (exit 2) when `platforms` needs cross-compilation and `builder` is the legacy builder
    (it ignores `FROM --platform=$BUILDPLATFORM` and builds the machine's platform only)."""
    if not platforms or builder.kind != "legacy":
        return
    native = native or native_platform()
    key = f"services.{service.name}.platforms" if source == "service" else f"environments.{env.name}.platforms"
    raise UsageError(
        f"{service.name}: platforms {', '.join(map(str, platforms))} ({key} in pipeline.toml) need BuildKit, "
        f"but the builder is the legacy builder, which builds only {native}",
        f"install Debian's docker.io (its 20.10 CLI drives BuildKit) or buildx, or set {key} = [\"{native}\"]")


def local_children(service: str, digest: str, platforms: tuple[Platform, ...],
                   native: Platform | None = None) -> dict[str, str] | None:
    """platform → local image ID of every platform built from these inputs; None when one is missing."""
    primary = primary_platform(platforms, native or native_platform())
    out: dict[str, str] = {}
    for plat in platforms:
        found = find_by_input_digest(service, digest, None if plat == primary else plat)
        if found is None:
            return None
        out[str(plat)] = found
    return out


def tag_child(service: str, digest: str, platform: Platform, primary: Platform, image_id: str) -> None:
    """Give a freshly built child its cache tag (the primary keeps the plain `in-<digest>` one)."""
    repo, tag = cache_ref(service, digest, None if platform == primary else platform).rsplit(":", 1)
    docker.tag_image(image_id, repo, tag)


def children_present(children: Mapping[str, str]) -> str | None:
    """None when the engine still holds every platform image (by ID), else the first missing one."""
    for plat, image_id in children.items():
        if docker.image_id(image_id) is None:
            return f"{plat} image {image_id[7:19]}"
    return None
