"""The images a release runs: its services' images and, where the environment runs them, its infra images
([infra.NAME] of pipeline.toml: PostgreSQL, Redis, NATS; another component is one more [infra.NAME] entry).

Push, sign, verify-images and deploy iterate one list of record subjects (`release_subjects`): a service
name, or `infra/<name>` for an infra image (its records live under `infra.<name>` in the Release manifest:
pipeline/core/manifest.py `subject_slot`). So every pod the pipeline creates runs an image that was pushed,
signed and is deployed by `repository@sha256:`, with no second path for the infra.

An infra image, per environment that runs it (`local_infra = true`):
  source      the engine's image that `invoke bases` provides: [bases.<base>].local (e.g. veza-local/postgres:15)
  repository  <registry>/<registry_namespace>/infra/<name>   (Environment.repository_for)
  tag         <source tag>-<first 12 hex of its image ID>, e.g. `15-3f2a9c1b7d4e`: one tag per content, so
              environments sharing a repository never move each other's tags; what deploys is the digest
Pure (no engine, registry or cluster call): the stages look the world up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.core.config import EMBEDDED_PROMETHEUS, Config, Environment
from pipeline.core.errors import UsageError
from pipeline.core.manifest import INFRA_PREFIX, Manifest

INFRA_REPOSITORY = "infra/{name}"   # under the environment's registry namespace


@dataclass(frozen=True)
class InfraImage:
    """One infra image of an environment: name ([infra.NAME]), record subject (`infra/<name>`), the local
    image it is made from and the environment's repository it is pushed to."""

    name: str
    subject: str
    source_ref: str
    repository: str

    @property
    def source_repository(self) -> str:
        """The local reference without its tag (`veza-local/postgres`)."""
        return split_tag(self.source_ref)[0]


def split_tag(ref: str) -> tuple[str, str]:
    """`name[:tag]` → (name, tag); the tag is "" when absent (a `:` in a registry host:port is not a tag)."""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
        return name, tag
    return ref, ""


def infra_subject(name: str) -> str:
    """The record subject of [infra.NAME]: `infra/<name>`."""
    return f"{INFRA_PREFIX}{name}"


def dependency_infra(cfg: Config) -> list[str]:
    """The [infra.NAME] the services use (PostgreSQL, Redis, NATS…: the compose stack's and the chart's
    `infra` hosts), in config order: every one but the embedded Prometheus, which only watches them."""
    return [name for name in cfg.infra if name != EMBEDDED_PROMETHEUS]


def infra_names(cfg: Config, env: Environment) -> list[str]:
    """The [infra.NAME] `env` runs beside its release, in config order: none without `local_infra` (its
    operators provide the infra); the dependencies (dependency_infra), and [infra.prometheus] only when
    `monitoring = "embedded"` (checked at load: pipeline/core/config.py)."""
    if not env.local_infra:
        return []
    return [name for name in cfg.infra
            if name != EMBEDDED_PROMETHEUS or env.monitoring == "embedded"]


def infra_images(cfg: Config, env: Environment) -> list[InfraImage]:
    """The infra images `env` runs beside its release (infra_names), in config order."""
    return [InfraImage(name, infra_subject(name), cfg.bases[cfg.infra[name].base].local,
                       env.repository_for(INFRA_REPOSITORY.format(name=name)))
            for name in infra_names(cfg, env)]


def content_tag(source_ref: str, image_id: str) -> str:
    """The registry tag of an infra image: its source tag and the first 12 hex digits of its image ID
    (`15-3f2a9c1b7d4e`), a valid OCI tag (at most 128 characters). ValueError for an ID that is not sha256."""
    if not image_id.startswith("sha256:") or len(image_id) < 19:
        raise ValueError(f"not an image ID: {image_id!r}")
    tag = split_tag(source_ref)[1] or "image"
    return f"{tag[:100]}-{image_id[7:19]}"


def release_subjects(cfg: Config, env: Environment, services: Sequence[str] | None = None) -> list[str]:
    """The record subjects a command works on: the selected services (all when none is named), in config
    order, then, when no service was named, the infra images env runs (`infra/<name>`). A `--service`
    selection leaves the infra alone, as the scan does."""
    out = [s.name for s in cfg.select(list(services) if services else None)]
    if not services:
        out += [i.subject for i in infra_images(cfg, env)]
    return out


def recorded_subjects(cfg: Config, env: Environment | None, man: Manifest,
                      services: Sequence[str] | None = None) -> list[str]:
    """The subjects whose records a release's attachments cover (SBOM, VEX, the `published` re-read): the named
    services, else every service the Release manifest records, then, when no service was named and `env` is
    given, every infra image env runs (`infra/<name>`, whether or not it has a record yet: the caller says
    what is missing). The same list the sign stage signs (pipeline/stages/sign.py pushed_images)."""
    out = [s.name for s in cfg.select(list(services))] if services else man.services()
    if not services and env is not None:
        out += [i.subject for i in infra_images(cfg, env)]
    return out


def pinned_infra(cfg: Config, env: Environment, man: Manifest | None) -> dict[str, str]:
    """[infra.NAME] → `repository@sha256:…` as the Release manifest's push records give them, for every infra
    image env runs; UsageError (exit 2) naming the first one without a pushed digest and the command to run."""
    out: dict[str, str] = {}
    for image in infra_images(cfg, env):
        pushed = man.pushed(image.subject) if man is not None else None
        if pushed is None or not pushed.ok:
            where = man.path if man is not None else f"{env.name}'s Release manifest (none)"
            raise UsageError(f"infra image {image.name} ({image.source_ref}) has no pushed digest in {where}",
                             f"run `invoke push --env {env.name}`: it pushes and records the infra images too")
        out[image.name] = pushed.ref
    return out


def pinned_ref_problem(name: str, ref: str | None) -> str:
    """"" when `ref` is `repository@sha256:<64 hex>`; else why the image of `name` is not pinned (one phrase)."""
    if not ref:
        return f"{name} has no image"
    digest = ref.partition("@")[2]
    hexpart = digest.removeprefix("sha256:")
    if not digest.startswith("sha256:") or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        return f"{name}'s image {ref} is not pinned by digest (repository@sha256:<64 hex>)"
    return ""


def check_pinned(images: Mapping[str, str], names: Sequence[str]) -> None:
    """UsageError naming the first of `names` whose image in `images` is missing or not pinned by digest."""
    for name in names:
        problem = pinned_ref_problem(name, images.get(name))
        if problem:
            raise UsageError(f"infra image: {problem}",
                             "deploy the infra from the Release manifest's digests (`invoke push` records them)")
