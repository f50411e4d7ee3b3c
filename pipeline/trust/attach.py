"""Attachments by the OCI tag-schema fallback: `<repo>:sha256-<hex>.<kind>` (kinds sig, att, sbom, vex).

The local registry (distribution 2.8) has no referrers API, so artifacts about an image live under a tag
derived from the image digest, as cosign, ORAS and Notation do. Signature (`.sig`) and attestation (`.att`)
manifests follow cosign's layout, which containers/image (skopeo, podman, CRI-O) reads with
`use-sigstore-attachments: true`: an OCI image manifest, a config blob whose rootfs lists the layers'
digests, and one layer per signature/envelope carrying its data in annotations.
Source: sigstore/cosign `pkg/oci` (static layers), containers/image `docker/docker_image_src.go`
(sigstore attachments), opencontainers/distribution-spec (referrers tag schema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import StageFailed
from pipeline.tools.registry_api import RegistryClient

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def attachment_tag(image_digest: str, kind: str) -> str:
    """`sha256:abc…` + `sig` → `sha256-abc….sig` (the tag-schema name)."""
    if not image_digest.startswith("sha256:") or len(image_digest) != 71:
        raise ValueError(f"not a sha256 digest: {image_digest!r}")
    return image_digest.replace(":", "-") + "." + kind


@dataclass(frozen=True)
class Layer:
    """One attachment layer: its bytes, media type and annotations (e.g. the signature)."""

    media_type: str
    data: bytes
    annotations: dict[str, str]


def read_layers(client: RegistryClient, repo: str, tag: str) -> list[Layer] | None:
    """The layers under `repo:tag`, blobs fetched; None when the tag does not exist."""
    got = client.get_manifest(repo, tag)
    if got is None:
        return None
    try:
        doc = json.loads(got[1])
    except ValueError:
        raise StageFailed(f"{repo}:{tag} is not a JSON manifest", "delete the tag and sign again") from None
    out: list[Layer] = []
    for layer in doc.get("layers") or []:
        data = client.get_blob(repo, str(layer["digest"]))
        out.append(Layer(str(layer.get("mediaType", "")), data, dict(layer.get("annotations") or {})))
    return out


def write_layers(client: RegistryClient, repo: str, tag: str, layers: list[Layer],
                 annotations: dict[str, str] | None = None) -> str:
    """Put a cosign-layout manifest with `layers` under `repo:tag`; returns its digest."""
    descriptors: list[dict[str, Any]] = []
    for layer in layers:
        digest = client.upload_blob(repo, layer.data)
        descriptors.append({"mediaType": layer.media_type, "size": len(layer.data), "digest": digest,
                            "annotations": layer.annotations})
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]}},
                        separators=(",", ":")).encode()
    config_digest = client.upload_blob(repo, config)
    body: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
                            "layers": descriptors}
    if annotations:
        body["annotations"] = annotations
    return client.put_manifest(repo, tag, json.dumps(body, separators=(",", ":")).encode(), OCI_MANIFEST)
