"""The OCI image index of a multi-platform image (pure: no registry, no engine).

Document (image-spec `image-index.md`, media type application/vnd.oci.image.index.v1+json):

    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
     "manifests": [{"mediaType": <child manifest type>, "digest": "sha256:…", "size": <bytes>,
                    "platform": {"architecture": "arm64", "os": "linux"[, "variant": "v7"]}}, …]}

The bytes are canonical (children sorted by platform, keys sorted, no whitespace), so the same children
always give the same index digest: a re-push of unchanged images writes nothing new.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core.platforms import Platform, parse_platform
from pipeline.tools.registry_answers import digest_of as digest_of  # the content digest, sha256:<hex>

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CHILD_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)


@dataclass(frozen=True)
class Child:
    """One platform image in the registry: its manifest digest, media type and size in bytes."""

    platform: Platform
    digest: str
    media_type: str
    size: int


def index_document(children: Sequence[Child]) -> bytes:
    """The canonical OCI image index bytes over `children`. ValueError for no child, a platform named
    twice, a digest that is not `sha256:<64 hex>`, a child that is not an image manifest, or size < 1."""
    if not children:
        raise ValueError("an image index needs at least one child")
    seen: set[Platform] = set()
    entries: list[dict[str, Any]] = []
    for c in sorted(children, key=lambda c: c.platform):
        if c.platform in seen:
            raise ValueError(f"platform {c.platform} appears twice in the index")
        seen.add(c.platform)
        hexpart = c.digest.removeprefix("sha256:")
        if not c.digest.startswith("sha256:") or len(hexpart) != 64 or any(ch not in "0123456789abcdef"
                                                                            for ch in hexpart):
            raise ValueError(f"child digest {c.digest!r} is not sha256:<64 hex>")
        if c.media_type not in CHILD_TYPES:
            raise ValueError(f"child {c.digest[:19]} has media type {c.media_type!r}, not an image manifest")
        if c.size < 1:
            raise ValueError(f"child {c.digest[:19]} has size {c.size}")
        entries.append({"mediaType": c.media_type, "digest": c.digest, "size": c.size,
                        "platform": c.platform.descriptor()})
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def children_of(body: bytes) -> dict[str, str]:
    """platform (`os/arch[/variant]`) → child digest of an index's bytes; ValueError when `body` is not an
    image index or an entry has no platform (attestation entries with os `unknown` are left out)."""
    doc = json.loads(body)
    if doc.get("mediaType") not in (OCI_INDEX, DOCKER_MANIFEST_LIST) and "manifests" not in doc:
        raise ValueError("not an image index")
    out: dict[str, str] = {}
    for m in doc.get("manifests") or []:
        plat: Mapping[str, str] = m.get("platform") or {}
        if not plat:
            raise ValueError(f"index entry {str(m.get('digest'))[:19]} has no platform")
        if plat.get("os") == "unknown":
            continue
        text = "/".join(p for p in (plat.get("os", ""), plat.get("architecture", ""), plat.get("variant", "")) if p)
        out[str(parse_platform(text))] = str(m["digest"])
    return out
