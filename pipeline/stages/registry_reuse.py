"""Reuse by input digest from the environment's registry: what a fresh runner (an empty engine) can learn there.

The push stage gives every single-platform image one more tag, `in-<hex of its input digest>`, beside the
service's tags. Before building, the plan asks the environment's registry for that tag (`lookup`): one GET of
the manifest and one of its config blob. A tag, not a label or an annotation, because a registry without the
referrers API (docker-registry 2.8) cannot find an image by a label without listing every tag and reading every
config; a tag is one request. A tag is mutable, so the config's own `veza.pipeline.input-digest` label must name
the same digest (an image pushed under that tag by hand is not reused), and the config's build label gives the
reused image its original build's facts (provenance).

After a miss there, the plan looks in the repositories of the environments `reuse_from` names
([environments.<env>].reuse_from, core/config_reuse.py), in order: a fresh runner of a tag pipeline finds dev's
image for the same inputs. Such an image is taken only when that environment's trusted keys signed it and attested
its provenance (verify_images.check_image, the checks of verify-images and of promotion's trust gate): a tag alone,
or a signature by another key, vouches for nothing, and the plan builds, saying why. The push then copies it by
digest into the environment's own repository (registry to registry, never through the engine) and the
environment's sign stage signs it with its own key.

Every lookup is an observation made by this run (never remembered): a registry that does not answer, or refuses
the lookup, means "build", with the reason said, not a failure (a push, when listed, has its own pre-flight).
Multi-platform images (an index per input digest) are not looked up here: they are built, and the plan says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.core.config import Config, Environment, Service
from pipeline.core.errors import PipelineError
from pipeline.core.vocab import LABEL_INPUT_DIGEST, carries_build_stamp
from pipeline.tools import skopeo
from pipeline.tools.registry_api import INDEX_TYPES, RegistryClient, split_repository
from pipeline.tools.registry_clients import RegistryClients

INPUT_TAG_PREFIX = "in-"


def input_tag(input_digest: str) -> str:
    """The registry tag naming an image by its input digest: "in-" + the 64 hex digits ("sha256:" dropped);
    67 characters, within the distribution spec's 128."""
    return INPUT_TAG_PREFIX + input_digest.removeprefix("sha256:")


@dataclass(frozen=True)
class RegistryImage:
    """An image the registry holds for an input digest.

    repository: registry/namespace/name; digest: its manifest digest; image_id: its config digest (the image ID
    the engine gives it once pulled: the classic image store names an image by its config); labels/created:
    the config's labels and creation time (RFC 3339), from which the build's origin is read; environment: the
    environment of `reuse_from` whose repository holds it, vouched for by its keys ("": the plan's own).
    """

    repository: str
    digest: str
    image_id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    environment: str = ""

    @property
    def ref(self) -> str:
        """`repository@sha256:…`."""
        return f"{self.repository}@{self.digest}"

    def as_inspect(self) -> dict[str, Any]:
        """The fields of an engine inspect that build.origin_from_image reads (Config.Labels, Created)."""
        return {"Config": {"Labels": dict(self.labels)}, "Created": self.created}


@dataclass(frozen=True)
class Lookup:
    """What the registry said about one input digest: the image, or why there is none ("" only with an image)."""

    image: RegistryImage | None
    note: str = ""


def registry_answers(client: RegistryClient) -> str | None:
    """None when the registry answers /v2/ (one try, no retry: a miss only means a build); else why not."""
    try:
        client.ping()
    except PipelineError as exc:
        return f"registry {client.address} did not answer the reuse lookup ({exc.message})"
    return None


def lookup(client: RegistryClient, repository: str, input_digest: str) -> Lookup:
    """The image `repository:in-<digest>` in the registry, checked by its config's input-digest label.

    Requests: one manifest GET, then one config blob GET when found. Never raises for a registry failure:
    the Lookup's note says what happened (absent, an index, another input digest, no answer).
    """
    _, repo = split_repository(repository)
    tag = input_tag(input_digest)
    short = f"{repository}:{tag[:15]}…"
    try:
        got = client.get_manifest(repo, tag)
        if got is None:
            return Lookup(None, f"no image for this input digest in the registry ({short})")
        ref, body = got
        doc = json.loads(body)
        if ref.media_type in INDEX_TYPES or doc.get("manifests") is not None:
            return Lookup(None, f"{short} is an index (multi-platform); only single images are reused from it")
        config_digest = str((doc.get("config") or {}).get("digest") or "")
        if not config_digest.startswith("sha256:"):
            return Lookup(None, f"{short} has no image config")
        config = json.loads(client.get_blob(repo, config_digest))
    except PipelineError as exc:
        return Lookup(None, f"registry {client.address} did not answer the reuse lookup ({exc.message})")
    except (ValueError, TypeError, AttributeError):
        return Lookup(None, f"{short} is not an image manifest the pipeline reads")
    labels = {str(k): str(v) for k, v in ((config.get("config") or {}).get("Labels") or {}).items()}
    found = labels.get(LABEL_INPUT_DIGEST, "")
    if found != input_digest:
        return Lookup(None, f"{short} carries input digest {found[:19] or 'none'}…, not this one: not reused")
    if not carries_build_stamp(labels):   # its provenance could not describe the build that made it
        return Lookup(None, f"{short} carries no build facts (built before they were recorded): not reused")
    return Lookup(RegistryImage(repository, ref.digest, config_digest, labels, str(config.get("created") or "")))


@dataclass(frozen=True)
class ReuseSource:
    """An environment whose repositories a plan may reuse from: `trusted` None for the plan's own environment
    (its images are its own pushes), else the keys that must have signed and attested an image there;
    `unusable`: why it cannot be used by this runner ("" = it can)."""

    env: Environment
    trusted: tuple[ec.EllipticCurvePublicKey, ...] | None = None
    unusable: str = ""


def reuse_sources(cfg: Config, env: Environment) -> list[ReuseSource]:
    """env itself, then each environment of env's `reuse_from` with its trusted keys (pipeline/trust/envkeys.py).
    A source without a key on this runner, or in another registry when skopeo (the registry-to-registry copy)
    is missing, is kept with the reason it cannot be used: the plan says it, and builds."""
    from pipeline.trust import envkeys

    out = [ReuseSource(env)]
    for name in env.reuse_from:
        src = cfg.env(name)
        try:
            keys = tuple(envkeys.trusted_keys(cfg, src))
        except PipelineError as exc:
            out.append(ReuseSource(src, (), f"{name}'s images cannot be checked here ({exc.message})"))
            continue
        if src.registry != env.registry and not skopeo.available():
            out.append(ReuseSource(src, keys, f"{name}'s registry is another one and copying from it needs skopeo "
                                              f"({skopeo.FIX})"))
            continue
        out.append(ReuseSource(src, keys))
    return out


def untrusted(client: RegistryClient, image: RegistryImage, trusted: Sequence[ec.EllipticCurvePublicKey]) -> str:
    """"" when `image` carries a signature and an SLSA provenance (of any commit: it was built earlier) by one of
    `trusted`, in the registry (verify_images.check_image); else what is missing or wrong, "; "-joined."""
    from pipeline.stages.verify_images import check_image

    try:
        return "; ".join(check_image(client, split_repository(image.repository)[1], image.digest, list(trusted),
                                     commit=None))
    except PipelineError as exc:
        return f"its signature could not be read ({exc.message})"


def find_reusable(registries: RegistryClients, sources: Sequence[ReuseSource], service: Service, input_digest: str,
                  answers: dict[str, str | None]) -> Lookup:
    """The first image for `input_digest` in the sources' repositories of `service`, in order, each checked as
    `lookup` does and, from another environment, vouched for by its keys (`untrusted`); else a Lookup whose note
    says, per source, why it had none. `answers`: registry address → why it did not answer (None: it did), shared
    by one plan so each registry is pinged once."""
    notes: list[str] = []
    for src in sources:
        if src.unusable:
            notes.append(src.unusable)
            continue
        repository = src.env.repository(service)
        address = split_repository(repository)[0]
        client = registries.client(address)
        if address not in answers:
            answers[address] = registry_answers(client)
        why_not = answers[address]
        found = Lookup(None, why_not) if why_not else lookup(client, repository, input_digest)
        if src.trusted is None:
            if found.image is not None:
                return found
            notes.append(found.note)
            continue
        name = src.env.name
        if found.image is None:
            notes.append(f"{name}'s repository: {found.note}")
            continue
        problem = untrusted(client, found.image, src.trusted)
        if not problem:
            return Lookup(replace(found.image, environment=name))
        notes.append(f"{name}'s image for this input digest ({found.image.ref}) is not signed and attested by "
                     f"{name}'s keys: {problem}")
    return Lookup(None, "; ".join(notes))


def registry_holds(registries: RegistryClients, image: str) -> str | None:
    """None when the registry still serves `image` ("repository@sha256:…", one HEAD, no retry), else why not."""
    repository, _, digest = image.partition("@")
    address, repo = split_repository(repository)
    try:
        found = registries.client(address).head_manifest(repo, digest)
    except PipelineError as exc:
        return f"registry {address} cannot be asked for {image} ({exc.message})"
    return None if found is not None else f"registry no longer has {image}"


@dataclass(frozen=True)
class Decision:
    """The plan's action for one service and why: action build | reuse; source engine | registry | "" (build)."""

    action: str
    reason: str
    source: str = ""


def decide(*, input_digest: str, base_missing: bool, no_cache: bool, local_image: str | None,
           registry: Lookup | None) -> Decision:
    """Build or reuse, in this order of precedence: a missing base builds (the digest names no real base), then
    --no-cache builds, then the engine's image with this input digest, then the registry's, else build with the
    registry's note (why it had none). `registry` is None when the registry was not asked (found locally,
    multi-platform, no registry given)."""
    if base_missing:
        return Decision("build", "base image missing: `invoke bases` will provide it")
    if no_cache:
        return Decision("build", "--no-cache")
    if local_image:
        return Decision("reuse", "same input digest as image " + local_image[7:19], "engine")
    if registry is not None and registry.image is not None and registry.image.environment:
        name = registry.image.environment
        return Decision("reuse", f"reused from {name}'s {registry.image.ref}, signed and attested by {name}'s keys "
                                 f"(input digest {input_digest[:19]}…)", "registry")
    if registry is not None and registry.image is not None:
        return Decision("reuse", f"reused from {registry.image.ref} (input digest {input_digest[:19]}…)", "registry")
    if registry is not None and registry.note:
        return Decision("build", f"no image with this input digest here; {registry.note}")
    return Decision("build", "no image with this input digest")
