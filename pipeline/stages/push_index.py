"""Pushing a multi-platform image: each platform's image (a child) by digest, then one OCI image index
naming every child with its platform, under every tag.

Per service:
1. "already there?" — the previous push record names the same local image per platform, the registry
   serves its index digest under every tag and still has every child: skipped (HEAD requests only).
2. Each child: the engine's image is exported to an OCI layout (skopeo, gzip layers: the same image gives
   the same digest), its config must name the child's platform, then it is pushed by digest (no tag),
   unless the registry already has that digest.
3. The index (pipeline/stages/image_index.py, canonical bytes) is put under every tag; then every tag must
   answer the index digest and every child must be served, before the service is recorded "pushed".
The record: `digest` = the index digest (what deploys pin), `media_type`, `children` (platform → child
digest) and `platform_images` (platform → local image ID, for the next "already there?").
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipelineError, RegistryAuthError, StageFailed
from pipeline.core.manifest import Pushed
from pipeline.core.platforms import parse_platform
from pipeline.core.redact import redact
from pipeline.core.retry import Attempts, with_retries
from pipeline.core.vocab import PushStatus
from pipeline.stages.image_index import OCI_INDEX, Child, digest_of, index_document
from pipeline.tools import skopeo
from pipeline.tools.registry_api import RegistryClient, split_repository

if TYPE_CHECKING:   # push.py imports this module
    from pipeline.stages.push import PushContext

EXPORT_TIMEOUT_S = 600.0


def _served(client: RegistryClient, repo: str, ref: str) -> str | None:
    found = client.head_manifest(repo, ref)
    return found.digest if found is not None else None


def already_pushed(client: RegistryClient, repo: str, tags: list[str], platform_images: dict[str, str],
                   previous: Pushed | None, repository: str) -> str | None:
    """The index digest when the previous record still holds in the registry for these same local images
    (every tag → that index, every child present); None when anything must be pushed."""
    if not previous or previous.status not in (PushStatus.PUSHED, PushStatus.SKIPPED) \
            or previous.repository != repository:
        return None
    digest, children = previous.digest, dict(previous.children)
    if not digest or dict(previous.platform_images) != platform_images or set(children) != set(platform_images):
        return None
    if any(_served(client, repo, tag) != digest for tag in tags):
        return None
    return str(digest) if index_holds(client, repo, children) is None else None


def push_child(ctx: PushContext, service: str, repository: str, platform: str, image_id: str, workdir: Path,
               counter: Attempts) -> Child:
    """Export one platform's image to an OCI layout and push it by digest (unless the registry has it).

    StageFailed when the image's config names another platform than `platform` (a Dockerfile that ignores
    TARGETARCH in its final stage, or a wrong cache tag); registry errors classified and retried.
    """
    plat = parse_platform(platform)
    address, repo = split_repository(repository)
    client = ctx.client(address)
    ctx.note(service, f"exporting the {platform} image")
    layout = workdir / plat.slug
    got = skopeo.export_oci(image_id, layout, timeout=EXPORT_TIMEOUT_S)
    named = "/".join(p for p in (got.os, got.architecture, got.variant if plat.variant else "") if p)
    if named != str(plat):
        raise StageFailed(f"{service}: the image built for {platform} ({image_id[7:19]}) is {named or 'unnamed'}",
                          "the Dockerfile's final stage must be built for the target platform; rebuild")
    note = ctx.retry_note(service)
    if with_retries(partial(_served, client, repo, got.digest), ctx.policy, counter, note) != got.digest:
        ctx.note(service, f"pushing the {platform} image by digest")
        creds = {address: ctx.credentials} if ctx.credentials is not None else {}
        cas = {address: client.cafile} if client.cafile else {}
        with_retries(partial(skopeo.push_layout, layout, repository, got.digest, credentials=creds,
                             timeout=EXPORT_TIMEOUT_S, ca_files=cas), ctx.policy, counter, note)
    return Child(plat, got.digest, got.media_type, got.size)


def push_index_image(ctx: PushContext, service: str, repository: str, tags: list[str], image_id: str,
                     platform_images: dict[str, str], previous: Pushed | None) -> dict[str, Any]:
    """Push a multi-platform image (module docstring); returns its push record. Raises only RegistryAuthError.
    `image_id` is the primary platform's local image (the one the engine runs), `platform_images` every
    platform's (platform → image ID).

    """
    started = time.monotonic()
    counter = Attempts()
    address, repo = split_repository(repository)
    client: RegistryClient = ctx.client(address)
    result: dict[str, Any] = {"repository": repository, "image_id": image_id,
                              "platform_images": dict(platform_images), "media_type": OCI_INDEX}
    digest: str | None = None
    note = ctx.retry_note(service)
    try:
        ctx.note(service, "checking the registry")
        known = with_retries(partial(already_pushed, client, repo, tags, platform_images, previous, repository),
                             ctx.policy, counter, note)
        if known:
            kept = dict(previous.children) if previous else {}
            return {**result, "status": PushStatus.SKIPPED, "digest": known, "children": kept,
                    "tags_pushed": list(tags), "attempts": counter.tries, "retries": counter.retries, "method": "none",
                    "duration_s": round(time.monotonic() - started, 3)}
        with tempfile.TemporaryDirectory(prefix="veza-oci-") as tmp:
            children = [push_child(ctx, service, repository, plat, image_id, Path(tmp), counter)
                        for plat, image_id in sorted(platform_images.items())]
        body = index_document(children)
        digest = digest_of(body)
        for tag in tags:
            ctx.note(service, f"writing the image index under :{tag}")
            put = with_retries(partial(client.put_manifest, repo, tag, body, OCI_INDEX), ctx.policy, counter, note)
            if put != digest:
                raise StageFailed(f"{repository}:{tag}: the registry stored the index as {put}, not {digest}",
                                  "the registry rewrote the index; check its configuration")
        # Verify through the registry: every tag answers the index, every child is served.
        wrong = [tag for tag in tags if with_retries(partial(_served, client, repo, tag), ctx.policy, counter,
                                                     note) != digest]
        missing = [str(c.platform) for c in children
                   if with_retries(partial(_served, client, repo, c.digest), ctx.policy, counter, note) != c.digest]
        if wrong or missing:
            raise StageFailed(f"{repository}: after the push, tags {wrong} do not answer {digest} "
                              f"or children {missing} are missing", "rerun the push")
        return {**result, "status": PushStatus.PUSHED, "digest": digest,
                "children": {str(c.platform): c.digest for c in children}, "tags_pushed": list(tags),
                "attempts": counter.tries, "retries": counter.retries, "method": "index",
                "duration_s": round(time.monotonic() - started, 3)}
    except RegistryAuthError:
        raise
    except PipelineError as exc:
        done = [tag for tag in tags if digest and _quiet_served(client, repo, tag) == digest]
        return {**result, "status": PushStatus.FAILED, "digest": digest, "error": redact(exc.one_line()),
                "tags_pushed": done, "attempts": counter.tries, "retries": counter.retries,
                "duration_s": round(time.monotonic() - started, 3)}
    except ValueError as exc:   # index_document refused the children
        return {**result, "status": PushStatus.FAILED, "digest": None, "error": f"no image index: {exc}",
                "tags_pushed": [], "attempts": counter.tries, "retries": counter.retries,
                "duration_s": round(time.monotonic() - started, 3)}


def _quiet_served(client: RegistryClient, repo: str, ref: str) -> str | None:
    """After a failure: what the registry serves (one try, no retry; None when it cannot say)."""
    try:
        return _served(client, repo, ref)
    except PipelineError:
        return None


def index_holds(client: RegistryClient, repo: str, children: dict[str, str]) -> str | None:
    """None when the registry serves every child digest of a pushed index, else the first missing one."""
    for plat, child in sorted(children.items()):
        if _served(client, repo, child) != child:
            return f"the {plat} image {child[:19]}"
    return None
