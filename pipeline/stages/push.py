"""The push stage: every tag of every built image to the environment's registry, in parallel, resiliently.

Per image:
1. "already there?" — HEAD every wanted tag through the registry API and compare with the digest the
   engine recorded for this image (RepoDigests) or the digest this manifest recorded for the same image ID.
   All tags at that digest: skipped (no engine call beyond one inspect). Some tags missing but the digest
   present: the missing tags are added by putting the same manifest bytes (no upload).
2. Otherwise `push` through the engine API per tag (credentials in the API header, never argv),
   transient failures retried with exponential backoff + jitter ([registry] retry_attempts/ceiling).
3. Verify: every tag must answer the pushed digest; only then is the image recorded as "pushed".
A single image also gets its input tag `in-<hex>` (by a manifest PUT, no upload): the tag the next runner's
build plan looks up (pipeline/stages/registry_reuse.py). An image the build reused from the registry is not in
the engine: its push is step 1 alone, the same manifest put under the release's tags (method "retag"), after a
copy by digest when the build found it in a `reuse_from` environment's repository (blob mounts within one registry,
skopeo between two: registry to registry, no layer through the engine).
A failed image is recorded "failed" with the tags verified so far: the manifest never claims an image
that is not in the registry, and a rerun pushes only what is missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.config import Config, Environment, RegistryAccess
from pipeline.core.errors import (
    Interrupted,
    PipelineError,
    RegistryAuthError,
    RegistryTrustError,
    StageFailed,
    UsageError,
)
from pipeline.core.manifest import Manifest, Pushed
from pipeline.core.parallel import run_parallel
from pipeline.core.redact import redact
from pipeline.core.release_images import content_tag, infra_images, release_subjects
from pipeline.core.reporter import Reporter
from pipeline.core.retry import Attempts, RetryPolicy, with_retries
from pipeline.core.vocab import LABEL_RUN, PushStatus
from pipeline.local.bases import LABEL_RECIPE_DIGEST, upstream_pin
from pipeline.stages.push_index import index_holds, push_index_image
from pipeline.stages.registry_reuse import input_tag
from pipeline.tools import docker_push
from pipeline.tools.registry_api import (
    Credentials,
    ManifestRef,
    RegistryClient,
    copy_within_registry,
    split_repository,
)
from pipeline.tools.registry_clients import RegistryClients, auth_fix


@dataclass
class PushTarget:
    service: str
    source_repository: str
    repository: str
    tags: list[str]
    image_id: str
    platform_images: dict[str, str] = field(default_factory=dict)   # multi-platform: platform → image ID
    record: dict[str, Any] = field(default_factory=dict)   # extra fields of its push record (an infra image's source)
    registry_image: str = ""   # reused from the registry, not in the engine: "repository@sha256:…" (no upload)
    input_tag: str = ""        # the tag naming the image by its input digest (registry_reuse.input_tag)

    @property
    def wanted(self) -> list[str]:
        """Every tag the registry must hold at the pushed digest: the service's, then the input tag."""
        return [*self.tags, self.input_tag] if self.input_tag else list(self.tags)


@dataclass
class PushContext:
    env: Environment
    policy: RetryPolicy
    credentials: Credentials | None
    registries: RegistryClients
    log: Callable[[str], None] = print
    progress: Callable[[str, str], None] | None = None    # (service, text) while an image is pushed
    stop: threading.Event = field(default_factory=threading.Event)   # set on Ctrl-C: uploads end, no retry waits

    def pause(self, seconds: float) -> None:
        """A retry's wait; raises Interrupted as soon as `stop` is set (Ctrl-C must not wait out a backoff)."""
        if self.stop.wait(seconds):
            raise Interrupted("push stopped (Ctrl-C)", "rerun the same command: it pushes only what is missing")

    def note(self, service: str, text: str) -> None:
        if self.progress is not None:
            self.progress(service, text)

    def retry_note(self, service: str) -> Callable[[int, float, BaseException], None]:
        """The log line of one retried registry call of `service`."""
        def note(n: int, wait: float, exc: BaseException) -> None:
            msg = exc.message if isinstance(exc, PipelineError) else str(exc)
            self.log(redact(f"  {service}: attempt {n} failed ({msg}); retrying in {wait:.1f}s"))
        return note

    def client(self, address: str) -> RegistryClient:
        return self.registries.client(address)


def check_registry_writable(cfg: Config, env: Environment, services: list[str] | None = None, *,
                            registries: RegistryClients | None = None) -> None:
    """Pre-flight, before any build: authenticate and prove push access on the first service's repository.

    Opens a blob upload session and cancels it (nothing is written). RegistryAuthError (exit 2) for bad
    credentials; StageFailed when the registry cannot be reached after the retries.
    """
    svcs = cfg.select(services)
    address, repo = split_repository(env.repository(svcs[0]))
    regs = registries or RegistryClients(cfg, env)
    client = regs.client(address)
    policy = regs.policy
    with_retries(client.ping, policy)
    with_retries(lambda: client.check_push_access(repo), policy)


def _targets(cfg: Config, env: Environment, manifest: Manifest,
             services: list[str] | None) -> list[PushTarget]:
    """What to push, checked before anything is pushed: a bad selection leaves nothing half-done."""
    names = [s.name for s in cfg.select(services)] if services else []
    out: list[PushTarget] = []
    for b in manifest.built_images(names):
        info = docker_push.local_image(b.local_ref)
        # Single images get the input tag the next runners' plans look up; an index does not (registry_reuse.py).
        in_tag = input_tag(b.input_digest) if b.input_digest and not b.platform_images else ""
        if b.registry_image and (info is None or info.id != b.image_id):
            # Reused from the registry and not pulled: the push only puts its manifest under the new tags.
            out.append(PushTarget(b.service, b.repository, env.repository(cfg.service(b.service)), list(b.tags),
                                  str(b.image_id), registry_image=b.registry_image, input_tag=in_tag))
            continue
        if info is None or info.id != b.image_id:
            raise UsageError(f"the image {b.local_ref} built for {b.service} is not in the local engine",
                             f"rerun `invoke build --service {b.service}`")
        for plat, image_id in b.platform_images.items():
            if docker_push.local_image(image_id) is None:
                raise UsageError(f"the {plat} image {image_id[7:19]} built for {b.service} is not in the local "
                                 "engine", f"rerun `invoke build --service {b.service}`")
        out.append(PushTarget(b.service, b.repository, env.repository(cfg.service(b.service)), list(b.tags), info.id,
                              dict(b.platform_images), input_tag=in_tag))
    if not services:   # a --service selection leaves the infra alone, as the scan does
        out += infra_targets(cfg, env)
    return out


def infra_targets(cfg: Config, env: Environment) -> list[PushTarget]:
    """The infra images env runs (pipeline/core/release_images.py), each from the engine's image `invoke bases`
    made to `<registry>/<namespace>/infra/<name>:<source tag>-<12 hex of its ID>`; UsageError when one is not in
    the engine. Their push record keeps `source` (local reference, recipe digest, the bases run, creation time,
    and `pulled_from`: the pinned `repository@sha256:…` of [bases.<base>].upstream when the engine's image
    carries it as a repository digest, i.e. it was pulled by that digest): what the sign stage checks against
    the image's own labels (pipeline/stages/infra_provenance.py)."""
    from pipeline.tools import docker

    out = []
    for image in infra_images(cfg, env):
        info = docker.inspect(image.source_ref)
        if info is None:
            raise UsageError(f"the infra image {image.source_ref} ([infra.{image.name}]) is not in the local engine",
                             "run `invoke bases` (it pulls or builds the base and infra images)")
        image_id, labels = str(info["Id"]), (info.get("Config") or {}).get("Labels") or {}
        pin = upstream_pin(cfg.bases[cfg.infra[image.name].base].upstream)
        source = {"ref": image.source_ref, "recipe_digest": str(labels.get(LABEL_RECIPE_DIGEST, "")),
                  "run_id": str(labels.get(LABEL_RUN, "")), "created": str(info.get("Created") or ""),
                  "pulled_from": pin if pin and pin in (info.get("RepoDigests") or ()) else ""}
        out.append(PushTarget(image.subject, image.source_repository, image.repository,
                              [content_tag(image.source_ref, image_id)], image_id,
                              record={"source": {k: v for k, v in source.items() if v}}))
    return out


def _known_digest(t: PushTarget, previous: Pushed | None) -> str | None:
    if t.registry_image:
        return t.registry_image.partition("@")[2]
    info = docker_push.local_image(t.image_id)
    if info is not None:
        d = docker_push.repo_digest(info, t.repository)
        if d:
            return d
    if previous and previous.digest and previous.image_id == t.image_id and previous.repository == t.repository:
        return previous.digest
    return None


def _registry_tags(ctx: PushContext, t: PushTarget, counter: Attempts) -> dict[str, ManifestRef | None]:
    address, repo = split_repository(t.repository)
    client = ctx.client(address)
    note = _on_retry(ctx, t)
    return {tag: with_retries(partial(client.head_manifest, repo, tag), ctx.policy, counter, note)
            for tag in t.wanted}


def _on_retry(ctx: PushContext, t: PushTarget) -> Callable[[int, float, BaseException], None]:
    return ctx.retry_note(t.service)


def _ping_note(ctx: PushContext, address: str) -> Callable[[int, float, BaseException], None]:
    def note(n: int, wait: float, exc: BaseException) -> None:
        ctx.log(f"  registry {address}: attempt {n} failed; retrying in {wait:.1f}s")
    return note


def push_one(ctx: PushContext, t: PushTarget, previous: Pushed | None) -> dict[str, Any]:
    """Push one image; returns its manifest push result. Raises only RegistryAuthError, and Interrupted once
    ctx.stop is set (Ctrl-C): the engine's upload is abandoned (its connection closed), no retry waits.

    A multi-platform image (t.platform_images) goes as children by digest plus an OCI index (push_index.py).
    """
    if t.platform_images:
        return push_index_image(ctx, t.service, t.repository, t.tags, t.image_id, t.platform_images, previous)
    started = time.monotonic()
    counter = Attempts()
    address, repo = split_repository(t.repository)
    client = ctx.client(address)
    known = _known_digest(t, previous)
    result: dict[str, Any] = {"repository": t.repository, "image_id": t.image_id}
    digest: str | None = known
    engine_retries = 0
    try:
        ctx.note(t.service, "checking the registry")
        present = _registry_tags(ctx, t, counter)
        if known and all(r is not None and r.digest == known for r in present.values()):
            return {**result, "status": PushStatus.SKIPPED, "digest": known, "tags_pushed": list(t.tags),
                    "attempts": counter.tries, "retries": counter.retries, "method": "none",
                    "duration_s": round(time.monotonic() - started, 3),
                    **({"input_tag": t.input_tag} if t.input_tag else {})}
        missing = [tag for tag, r in present.items() if r is None or r.digest != known]
        method = "engine"
        got = with_retries(partial(client.get_manifest, repo, known), ctx.policy, counter,
                           _on_retry(ctx, t)) if known else None
        if got is None and t.registry_image:
            got = _from_reused(ctx, t, counter)
        if got is not None:
            # The image is in the registry under another tag: add the tags, no upload at all.
            ref, body = got
            for tag in missing:
                with_retries(partial(client.put_manifest, repo, tag, body, ref.media_type),
                             ctx.policy, counter, _on_retry(ctx, t))
            method = "retag"
        else:
            if t.repository != t.source_repository:
                for tag in t.tags:
                    docker_push.tag(t.image_id, t.repository, tag)
            for tag in t.tags:
                ctx.note(t.service, f"pushing :{tag}")
                pushed = with_retries(partial(_push_when_up, client, t.repository, tag, ctx.credentials,
                                              partial(_pushing, ctx, t.service, tag), ctx.stop, counter),
                                      ctx.policy, counter, _on_retry(ctx, t), sleep=ctx.pause)
                d = pushed.digest
                engine_retries += pushed.engine_retries
                if digest and d != digest and tag != t.tags[0]:
                    raise StageFailed(f"{t.repository}:{tag} was pushed as {d}, but {t.tags[0]} as {digest}")
                digest = d
            at_input_tag = present.get(t.input_tag) if t.input_tag else None
            if t.input_tag and digest and (at_input_tag is None or at_input_tag.digest != digest):
                _put_tag(ctx, t, client, repo, str(digest), t.input_tag, counter)
        # Verify through the registry, not the engine's word: every tag must answer the digest.
        final = _registry_tags(ctx, t, counter)
        wrong = [tag for tag, r in final.items() if r is None or r.digest != digest]
        if wrong:
            raise StageFailed(f"{t.repository}: tags {wrong} do not point to {digest} after the push",
                              "rerun the push")
        return {**result, "status": PushStatus.PUSHED, "digest": digest, "tags_pushed": list(t.tags),
                "attempts": counter.tries, "retries": counter.retries, "engine_retries": engine_retries,
                "method": method, "duration_s": round(time.monotonic() - started, 3),
                **({"input_tag": t.input_tag} if t.input_tag else {})}
    except (RegistryAuthError, Interrupted):
        raise
    except PipelineError as exc:
        return {**result, "status": PushStatus.FAILED, "digest": digest, "error": redact(exc.one_line()),
                "tags_pushed": _verified_tags(client, repo, t.tags, digest),
                "attempts": counter.tries, "retries": counter.retries, "engine_retries": engine_retries,
                "duration_s": round(time.monotonic() - started, 3)}


def _push_when_up(client: RegistryClient, repository: str, tag: str, credentials: Credentials | None,
                  on_progress: Callable[[str], None], stop: threading.Event,
                  counter: Attempts) -> docker_push.PushedTag:
    """One try of an engine push. A retry (counter.tries > 1) first asks the registry's /v2/ itself: while it
    is still down or answering 5xx, the try fails here in one request, instead of the engine's own layer
    retries (5 per layer, backing off up to ~15 s each) running outside [registry] retry_attempts/ceiling."""
    if counter.tries > 1:
        client.ping()
    return docker_push.push_tag(repository, tag, credentials, on_progress, stop=stop)


def _from_reused(ctx: PushContext, t: PushTarget, counter: Attempts) -> tuple[ManifestRef, bytes]:
    """The manifest of an image reused from the registry, in the target repository: there already (the build
    looked it up in this environment's repository), else copied by digest from the repository the build found it
    in (a `reuse_from` environment's): within one registry by blob mounts, from another registry by skopeo
    (registry to registry, digests preserved, under the first tag); never through the engine. StageFailed when the
    source no longer has it or the copy fails after the retries: the push is then recorded failed, and a rerun
    copies again (or finds the copy and only tags it)."""
    src_repository, _, digest = t.registry_image.partition("@")
    src_address, src_repo = split_repository(src_repository)
    address, repo = split_repository(t.repository)
    rebuild = f"rerun `invoke build --service {t.service}` (it builds or finds the image again)"
    client = ctx.client(address)
    if src_address != address:
        _copy_between_registries(ctx, t, src_address, address, counter)
    elif src_repo != repo:
        with_retries(partial(copy_within_registry, client, src_repo, digest, repo, []), ctx.policy, counter,
                     _on_retry(ctx, t))
    got = with_retries(partial(client.get_manifest, repo, digest), ctx.policy, counter, _on_retry(ctx, t))
    if got is None:
        raise StageFailed(f"the registry no longer has {t.registry_image}, reused by the build of {t.service}",
                          rebuild)
    return got


def _copy_between_registries(ctx: PushContext, t: PushTarget, src_address: str, address: str,
                             counter: Attempts) -> None:
    """`skopeo copy` of t.registry_image to `t.repository:<first tag>` (promotion's copy, tools/skopeo.py), each
    registry with its own credentials and CA; transient failures retried by the policy."""
    from pipeline.tools import skopeo

    clients = {a: ctx.client(a) for a in (src_address, address)}
    creds = {a: c.credentials for a, c in clients.items() if c.credentials is not None}
    cas = {a: c.cafile for a, c in clients.items() if c.cafile is not None}
    ctx.note(t.service, f"copying {t.registry_image} (registry to registry)")
    with_retries(partial(skopeo.copy, t.registry_image, f"{t.repository}:{t.tags[0]}", credentials=creds,
                         timeout=float(ctx.registries.cfg.registry.timeout_s), ca_files=cas),
                 ctx.policy, counter, _on_retry(ctx, t), sleep=ctx.pause)


def _put_tag(ctx: PushContext, t: PushTarget, client: RegistryClient, repo: str, digest: str, tag: str,
             counter: Attempts) -> None:
    """Put the manifest at `digest` under one more tag (no upload)."""
    got = with_retries(partial(client.get_manifest, repo, digest), ctx.policy, counter, _on_retry(ctx, t))
    if got is None:
        raise StageFailed(f"{t.repository}@{digest} is not in the registry right after its push", "rerun the push")
    with_retries(partial(client.put_manifest, repo, tag, got[1], got[0].media_type), ctx.policy, counter,
                 _on_retry(ctx, t))


def _verified_tags(client: RegistryClient, repo: str, tags: list[str], digest: str | None) -> list[str]:
    """After a failure: the tags that are really in the registry at the digest (one try, no retry)."""
    if not digest:
        return []
    out: list[str] = []
    for tag in tags:
        try:
            r = client.head_manifest(repo, tag)
        except PipelineError:
            return out
        if r is not None and r.digest == digest:
            out.append(tag)
    return out


def push_images(cfg: Config, env: Environment, man: Manifest, reporter: Reporter,
                services: list[str] | None = None, *, workers: int | None = None,
                registries: RegistryClients | None = None) -> StageSummary:
    """Push the images of the Release manifest to env's registry; records each service's `push` record.

    Returns the stage summary (counts, retries). Raises RegistryAuthError (exit 2) on refused credentials,
    StageFailed (exit 1) when any image failed (after recording every result), UsageError for a bad
    selection (before pushing anything).
    """
    log = reporter.info
    started = time.monotonic()
    targets = _targets(cfg, env, man, services)
    addresses = sorted({split_repository(t.repository)[0] for t in targets})
    regs = registries or RegistryClients(cfg, env)
    ctx = PushContext(env=env, policy=regs.policy, credentials=None, registries=regs, log=lambda s: log(redact(s)),
                      progress=lambda service, text: reporter.step("push", service, text))
    for address in addresses:  # one registry per environment in practice
        ctx.credentials = regs.credentials(address)
        try:
            # Fail fast: a refused password is exit 2 now, before the engine uploads anything.
            with_retries(regs.client(address).ping, ctx.policy, None, _ping_note(ctx, address))
        except RegistryAuthError:
            raise
        except PipelineError as exc:
            raise StageFailed(f"registry {address} cannot be reached: {exc.message}",
                              exc.hint or "start it (local: invoke registry-up) and rerun the push") from None

    n_workers = workers or cfg.build.workers or min(4, len(targets))
    results: dict[str, dict[str, Any]] = {}
    auth_error: RegistryAuthError | None = None

    def task(t: PushTarget) -> None:
        nonlocal auth_error
        try:
            res = push_one(ctx, t, man.pushed(t.service))
        except RegistryAuthError as exc:
            auth_error = _named(exc, regs.access(split_repository(t.repository)[0]))
            res = {"repository": t.repository, "image_id": t.image_id, "status": PushStatus.FAILED,
                   "digest": None, "tags_pushed": [], "attempts": 1, "error": exc.message}
        man.record(t.service, "push", {**res, **t.record})
        results[t.service] = res
        state = {"failed": "failed", "skipped": "cached"}.get(str(res["status"]), "done")
        reporter.step("push", t.service, redact(_line(t, res).split(": ", 1)[1]), state)

    run_parallel(targets, task, ctx.stop, max_workers=n_workers, name="push")

    counts = {s: sum(1 for r in results.values() if r["status"] == s)
              for s in ("pushed", "skipped", "failed")}
    retries = sum(int(r.get("retries", 0)) for r in results.values())
    duration = round(time.monotonic() - started, 3)
    detail = (f"{counts['pushed']} pushed, {counts['skipped']} already in the registry, "
              f"{counts['failed']} failed, {retries} retries")
    ctx.log(f"push: {detail}, {duration:.2f}s")
    if auth_error is not None:
        raise auth_error
    if counts["failed"]:
        failed = ", ".join(sorted(s for s, r in results.items() if r["status"] == "failed"))
        raise StageFailed(f"push failed for {failed}", "see the messages above; rerun `invoke push` to push "
                                                       "only what is missing")
    return StageSummary(detail, {"retries": retries, **counts})


def registry_serves(cfg: Config, man: Manifest, services: list[str], *,
                    registries: RegistryClients | None = None, env: Environment | None = None) -> str | None:
    """None when the registry serves every recorded digest under every recorded tag (HEAD requests), else
    the first difference as one line ("registry no longer has veza-docs@sha256:…"). `services` are record
    subjects (infra images as `infra/<name>`); with `env`, an infra image recorded from another local image
    than the engine's now (`invoke bases` rebuilt it) is a difference too."""
    regs = registries or RegistryClients(cfg)
    sources = {t.service: t.image_id for t in infra_targets(cfg, env)} if env is not None else {}
    for name in services:
        pushed = man.pushed(name)
        if pushed is None or not pushed.ok:
            return f"{name} has no pushed image recorded"
        if name in sources and pushed.image_id != sources[name]:
            return f"{name}: the engine's image is {sources[name][:19]}, the push recorded {pushed.image_id}"
        address, path = split_repository(pushed.repository)
        try:
            client = regs.client(address)
            for tag in pushed.tags:
                ref = client.head_manifest(path, tag)
                if ref is None or ref.digest != pushed.digest:
                    now = ref.digest[:19] if ref else "nothing"
                    return f"registry serves {now} for {pushed.repository}:{tag}, not {str(pushed.digest)[:19]}"
            gone = index_holds(client, path, dict(pushed.children))
            if gone:
                return f"registry no longer has {gone} of {pushed.repository}@{str(pushed.digest)[:19]}"
        except PipelineError as exc:
            return f"registry {address} cannot be asked ({exc.message})"
    return None


class PushStage(BaseStage):
    """Every tag of every built image to the environment's registry, verified by digest (the SBOMs: the `sbom`
    stage attached to this one, pipeline/stages/attach_sbom.py)."""

    name = "push"

    def preflight(self, ctx: RunContext) -> None:
        """The registry accepts our writes (and the embedded one runs), before anything is built."""
        if ctx.env.registry.startswith(("127.0.0.1:", "localhost:")):
            from pipeline.local.embedded_registry import ensure_local_registry

            ensure_local_registry(ctx.cfg, ctx.env.registry)
        check_registry_writable(ctx.cfg, ctx.env, ctx.services or None, registries=ctx.registries)
        ctx.reporter.info(f"pre-flight: registry {ctx.env.registry} accepts pushes")

    def holds(self, ctx: RunContext) -> str | None:
        if ctx.services:
            why = registry_serves(ctx.cfg, ctx.manifest, ctx.selected(), registries=ctx.registries)
        else:
            why = registry_serves(ctx.cfg, ctx.manifest, release_subjects(ctx.cfg, ctx.env), registries=ctx.registries,
                                  env=ctx.env)
        return f"{why}; pushing again" if why else None

    def run(self, ctx: RunContext) -> StageSummary:
        return push_images(ctx.cfg, ctx.env, ctx.manifest, ctx.reporter, ctx.services or None,
                           registries=ctx.registries)


def _named(exc: RegistryAuthError, access: RegistryAccess) -> RegistryAuthError:
    """The error with the environment and the registry first, and (for a refused credential the engine reported)
    the variables to set as its fix: one line says what, where and how to fix."""
    if exc.message.startswith(access.where()):
        return exc
    hint = exc.hint if isinstance(exc, RegistryTrustError) else auth_fix(access)
    return type(exc)(f"{access.where()}: {exc.message}", hint)


def _pushing(ctx: PushContext, service: str, tag: str, text: str) -> None:
    ctx.note(service, f"pushing :{tag} — {text}")


def _line(t: PushTarget, r: dict[str, Any]) -> str:
    if r["status"] == "failed":
        return f"  {t.service}: FAILED after {r.get('attempts', 1)} attempt(s): {r.get('error', '')}"
    tries = f", {r['retries']} retries" if r.get("retries") else ""
    if r.get("engine_retries"):
        tries += f", {r['engine_retries']} layer retries by the engine"
    what = "already in the registry" if r["status"] == "skipped" else f"pushed ({r.get('method')})"
    return (f"  {t.service}: {what} {t.repository}@{r['digest']} "
            f"[{', '.join(r['tags_pushed'])}]{tries} {r.get('duration_s', 0):.2f}s")
