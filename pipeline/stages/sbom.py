"""Attach each image's CycloneDX SBOM to the pushed image in the registry, as an OCI artifact.

The artifact is an OCI image manifest (artifactType application/vnd.cyclonedx+json, empty config, one
layer: the SBOM) whose `subject` is the image manifest, so registries with the OCI 1.1 referrers API list
it under the image. Registries without that API (distribution 2.8) find it by the tag convention
`<repository>:sha256-<image digest hex>.sbom`, which this module always sets too.
"""

from __future__ import annotations

import base64
import json
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.errors import PipelineError, RegistryAuthError, StageFailed, UsageError
from pipeline.core.manifest import INFRA_PREFIX, Built, Manifest, Pushed
from pipeline.core.release_images import recorded_subjects
from pipeline.core.reporter import Reporter
from pipeline.core.retry import with_retries
from pipeline.core.vocab import AttachStatus, now_iso
from pipeline.tools.registry_api import RegistryClient, split_repository
from pipeline.tools.registry_clients import RegistryClients, retry_policy

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"


def sbom_tag(image_digest: str) -> str:
    return image_digest.replace(":", "-") + ".sbom"


def attach_sbom(client: RegistryClient, repo: str, image_digest: str, sbom: Path) -> tuple[str, str]:
    """Push the SBOM as an artifact referring to repo@image_digest; returns (tag, artifact digest)."""
    subject = client.head_manifest(repo, image_digest)
    if subject is None:
        raise UsageError(f"{repo}@{image_digest} is not in the registry {client.address}",
                         "push the image first (`invoke push`)")
    data = sbom.read_bytes()
    config_digest = client.upload_blob(repo, EMPTY)
    layer_digest = client.upload_blob(repo, data)
    body: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_CONFIG, "digest": config_digest, "size": len(EMPTY),
                   "data": base64.b64encode(EMPTY).decode()},
        "layers": [{"mediaType": SBOM_MEDIA_TYPE, "digest": layer_digest, "size": len(data),
                    "annotations": {"org.opencontainers.image.title": sbom.name}}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": {"org.opencontainers.image.created": now_iso()},
    }
    tag = sbom_tag(image_digest)
    digest = client.put_manifest(repo, tag, json.dumps(body, separators=(",", ":")).encode(), OCI_MANIFEST)
    return tag, digest


def _attach_child_sboms(cfg: Config, client: RegistryClient, repo: str, build: Built | None, push: Pushed,
                        primary_sbom: Path) -> list[tuple[str, str]]:
    """A multi-platform image: an SBOM attached to each child digest — the scan stage's SBOM for the child
    the scan ran on (the primary: the local image with the service's tags), a Trivy SBOM of the local image
    for each other platform. Returns (platform, tag) pairs; [] for a single-platform image."""
    from pipeline.tools import trivy

    children: dict[str, str] = dict(push.children)
    images: dict[str, str] = dict(build.platform_images) if build else {}
    out: list[tuple[str, str]] = []
    for plat, child in sorted(children.items()):
        image_id = images.get(plat)
        if image_id is None:
            raise StageFailed(f"no local image recorded for the {plat} child {child[:19]}", "rerun `invoke build`")
        if build is not None and image_id == build.image_id:
            sbom = primary_sbom
        else:
            sbom = trivy.sbom_image(image_id, primary_sbom.with_name(f"sbom.{plat.replace('/', '-')}.cdx.json"),
                                    cache_dir=trivy.default_cache_dir(cfg.scan.db_repository))
        tag, _ = with_retries(partial(attach_sbom, client, repo, child, sbom), retry_policy(cfg))
        out.append((plat, tag))
    return out


def attach_sboms(cfg: Config, man: Manifest, reporter: Reporter, services: list[str] | None = None, *,
                 registries: RegistryClients | None = None, infra_of: Environment | None = None) -> dict[str, str]:
    """Attach the scan stage's SBOM to every pushed image of the Release manifest; returns subject → ref.

    Subjects: the selected services (all the manifest records when none is named) and, with `infra_of` and no
    selection, every infra image that environment runs (`infra/<name>`: its SBOM is the scan's of the local
    image it was pushed from, which must be the pushed image ID). Like a service's, an infra image's SBOM is
    recorded in its own `sbom` record (`infra.<name>.sbom`).

    A multi-platform image also gets an SBOM on each child digest (the record's `children`: platform →
    ref). Each attachment is recorded in the service's own `sbom` record (ref, digest). UsageError before
    anything is attached when a service has no pushed image or no SBOM; StageFailed when the registry
    refuses one.
    """
    log = reporter.info
    names = recorded_subjects(cfg, infra_of, man, services)
    todo: list[tuple[str, Pushed, Path]] = []
    for name in names:
        push, scan = man.pushed(name), man.scanned(name)
        if push is None or not push.ok or not push.digest:
            raise UsageError(f"{name} has no pushed image in the Release manifest", "run `invoke push` first")
        if scan is None or not scan.sbom or not Path(scan.sbom).is_file():
            raise UsageError(f"{name} has no SBOM from the scan stage", "run `invoke scan` first")
        if name.startswith(INFRA_PREFIX) and scan.image_id and push.image_id and scan.image_id != push.image_id:
            raise UsageError(f"{name}: the SBOM is of image {scan.image_id[:19]}, the pushed image is "
                             f"{push.image_id[:19]}", "run `invoke scan` and `invoke push` again")
        todo.append((name, push, Path(scan.sbom)))
    regs = registries or RegistryClients(cfg)
    out: dict[str, str] = {}
    for name, push, sbom in todo:
        repository = push.repository
        address, repo = split_repository(repository)
        client = regs.client(address)
        try:   # transient registry failures (TOOMANYREQUESTS, 5xx, resets) retried; attaching is idempotent
            tag, digest = with_retries(partial(attach_sbom, client, repo, str(push.digest), sbom),
                                       retry_policy(cfg))
            children = {plat: f"{repository}:{t}" for plat, t in _attach_child_sboms(
                cfg, client, repo, man.built(name), push, sbom)}
        except RegistryAuthError:
            raise
        except PipelineError as exc:
            raise StageFailed(f"cannot attach the SBOM of {name}: {exc.message}", exc.hint) from None
        out[name] = f"{repository}:{tag}"
        man.record(name, "sbom", {"status": AttachStatus.ATTACHED, "ref": out[name], "digest": digest,
                                  "subject": str(push.digest), "format": "cyclonedx",
                                  **({"children": children} if children else {})})
        log(f"sbom {name}: attached to {push.ref} as {out[name]}"
            + (f" (and to each of its {len(children)} platform images)" if children else ""))
    return out
