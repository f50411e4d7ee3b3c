"""The SLSA provenance facts of an infra image ([infra.NAME]: PostgreSQL, Redis, NATS…), signed and attested by
the sign stage like a service's (pipeline/stages/sign.py), taken from the image itself.

An infra image is not built by the build stage: `invoke bases` builds it from its recipe in
pipeline/local/recipes/<recipe>/ and labels it with its build facts (pipeline/local/bases.py: recipe digest,
builder, parent base by image ID, the Debian packages dpkg lists in it), or pulls it by the digest pipeline.toml
pins. The facts are read from the pushed image's config in the registry (the bytes being signed), never from the
working tree, and checked before anything is signed (UsageError, exit 2, one line with the fix):

- built here (the config carries LABEL_RECIPE_DIGEST): every build-fact label must be there, the image's layers
  must be the ones recorded (LABEL_LAYERS: an image built FROM it inherits its labels, not its layers), and the
  recorded recipe digest must be the current recipe's (`resolve_recipes` over the tree's recipes): an image built from
  another recipe is not described by this tree. Provenance: build type `…/veza-pipeline/infra-image/v1`, the
  recipe's Dockerfile (by sha256; the recipe digest covers it) and directory, the recipe digest as input digest,
  the parent base by image ID and every Debian package (`pkg:deb/debian/<name>@<version>`) as materials, the
  builder's versions, the bases run as invocation, the label's start and the config's creation time.
- pulled (no recipe label): [bases.<base>].upstream must be pinned by digest, and the push must have recorded
  that the engine's image carried that repository digest (`source.pulled_from`). Provenance: build type
  `…/veza-pipeline/infra-pulled/v1`, one material `pulled from <repository>@sha256:…` — no Dockerfile, no
  recipe: it was not built here.

The source material is the release's commit (the pipeline.toml that maps the image, and recipes whose digest
was just checked against the image's).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import Config
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest, subject_slot
from pipeline.core.vocab import LABEL_RUN, now_iso
from pipeline.local.bases import (
    LABEL_BUILDER,
    LABEL_LAYERS,
    LABEL_PACKAGES,
    LABEL_PACKAGES_DIGEST,
    LABEL_PARENT,
    LABEL_RECIPE_DIGEST,
    RECIPES_DIR,
    layers_digest,
    missing_build_facts,
    resolve_recipes,
    upstream_pin,
)
from pipeline.tools.registry_api import RegistryClient, split_repository
from pipeline.trust.provenance import BuildFacts

INFRA_BUILD_TYPE_PATH = "veza-pipeline/infra-image/v1"
PULLED_BUILD_TYPE_PATH = "veza-pipeline/infra-pulled/v1"
PULLED_MATERIAL = "pulled-from"


@dataclass(frozen=True)
class ImageConfig:
    """What the registry's image config says of a pushed image: its digest (the image ID), labels, creation."""

    digest: str
    labels: Mapping[str, str]
    created: str
    diff_ids: tuple[str, ...] = ()   # rootfs.diff_ids: the image's layers, in order


def registry_image_config(client: RegistryClient, repository: str, digest: str) -> ImageConfig:
    """The config of `repository@digest` as the registry serves it (one manifest GET, one blob GET).
    UsageError when the registry lacks the image or serves no image config (an index: infra images are single)."""
    _, repo = split_repository(repository)
    got = client.get_manifest(repo, digest)
    if got is None:
        raise UsageError(f"{repository}@{digest} is not in the registry", "run `invoke push` first")
    try:
        config_digest = str((json.loads(got[1]).get("config") or {}).get("digest") or "")
    except (ValueError, AttributeError):
        config_digest = ""
    if not config_digest.startswith("sha256:"):
        raise UsageError(f"{repository}@{digest} has no image config", "push the infra image again (`invoke push`)")
    config = json.loads(client.get_blob(repo, config_digest))
    labels = {str(k): str(v) for k, v in ((config.get("config") or {}).get("Labels") or {}).items()}
    diff_ids = tuple(str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or ())
    return ImageConfig(config_digest, labels, str(config.get("created") or ""), diff_ids)


def current_recipe_digest(cfg: Config, base: str) -> tuple[str, Path]:
    """(recipe digest, recipe directory) of [bases.<base>] as `invoke bases` would build it now: the recipes of
    the release's tree when it has them (a clone), else the ones this pipeline runs with."""
    in_tree = cfg.root / RECIPES_DIR.relative_to(RECIPES_DIR.parents[2])
    recipes_dir = in_tree if in_tree.is_dir() else RECIPES_DIR
    recipe = resolve_recipes(cfg.bases, recipes_dir)[base]
    return recipe.digest, recipe.directory


def infra_build_facts(cfg: Config, man: Manifest, subject: str, repository: str, digest: str,
                      image: ImageConfig) -> BuildFacts:
    """The provenance facts of the infra image `subject` (`infra/<name>`) pushed as repository@digest, whose
    registry config is `image` (registry_image_config).

    UsageError (exit 2, one line, the fix) when the manifest records no commit or no push, the config has no
    [infra.NAME], the registry's image is not the pushed one, or the image cannot be described: built here
    without its build facts or from another recipe than the current one; pulled without a pin by digest, or
    not from the pinned digest."""
    name = subject_slot(subject)[1]
    commit = man.commit
    if not commit:
        raise UsageError(f"the Release manifest {man.path} records no git commit", "run `invoke build` first")
    if name not in cfg.infra:
        raise UsageError(f"{subject} is recorded in {man.path} but pipeline.toml has no [infra.{name}]",
                         f"add [infra.{name}] back, or rerun `invoke push` for this release")
    pushed = man.pushed(subject)
    if pushed is None or not pushed.image_id:
        raise UsageError(f"{subject} has no push record in {man.path}", "run `invoke push` first")
    if image.digest != pushed.image_id:
        raise UsageError(f"{subject}: the registry's {repository}@{digest[:19]}… is image {image.digest[:19]}…, "
                         f"not the pushed {pushed.image_id[:19]}…", "run `invoke push` again")
    base = cfg.bases[cfg.infra[name].base]
    url = cfg.source_url or f"file://{cfg.root}"
    # The build is described by what made the image (its recipe by digest, or the pinned upstream), never by the
    # release's commit: no commit is known for it. The release that runs it is the reuse byproduct, as for a
    # service image reused at a later commit (check_provenance accepts either).
    common: dict[str, Any] = dict(
        repository=repository, digest=digest, commit="", dirty=False, source_uri=f"git+{url}",
        builder_id=cfg.signing.builder_id, finished_on=image.created, reuse_commit=commit, reused_on=now_iso())
    labels = image.labels
    if LABEL_RECIPE_DIGEST not in labels:
        return _pulled_facts(subject, base.name, base.upstream, pushed.source, url, common)
    lacking = missing_build_facts(labels)
    if lacking:
        raise UsageError(f"{subject} ({repository}@{digest[:19]}…) has no build facts: {', '.join(lacking)} "
                         "missing from its labels", "rebuild it: `invoke bases` (it rebuilds infra images without "
                         "them), then `invoke push`")
    if labels[LABEL_LAYERS] != layers_digest(image.diff_ids):
        raise UsageError(f"{subject} ({repository}@{digest[:19]}…) does not have the layers `invoke bases` built "
                         f"under its labels (an image derived from the built one inherits its labels)",
                         "rebuild it: `invoke bases --force`, then `invoke push`")
    current, recipe_dir = current_recipe_digest(cfg, base.name)
    recorded = labels[LABEL_RECIPE_DIGEST]
    if recorded != current:
        raise UsageError(f"{subject} ({repository}@{digest[:19]}…) was built from recipe {recorded[:19]}…, but "
                         f"the current recipe '{base.recipe}' is {current[:19]}…",
                         "rebuild it from the current recipe: `invoke bases`, then `invoke push` and `invoke sign`")
    try:
        builder = {str(k): str(v) for k, v in json.loads(labels[LABEL_BUILDER]).items()}
    except (ValueError, AttributeError):
        raise UsageError(f"{subject}: its {LABEL_BUILDER} label is not a JSON object",
                         "rebuild it: `invoke bases --force`, then `invoke push`") from None
    dockerfile = recipe_dir / "Dockerfile"
    materials: list[dict[str, Any]] = []
    parent_ref, _, parent_id = labels.get(LABEL_PARENT, "").partition("@")
    if parent_id.startswith("sha256:"):
        materials.append({"uri": f"docker-image://{parent_ref}", "name": "base-image",
                          "digest": {"sha256": parent_id.removeprefix("sha256:")}})
    materials.append({"name": "debian-packages", "digest": {"sha256": labels[LABEL_PACKAGES_DIGEST][7:]},
                      "annotations": {"label": LABEL_PACKAGES}})
    for entry in labels[LABEL_PACKAGES].split(","):
        pkg, _, ver = entry.partition("=")
        materials.append({"uri": f"pkg:deb/debian/{pkg}@{ver}", "name": "debian-package"})
    return BuildFacts(
        **common, dockerfile=_relative(cfg, dockerfile),
        dockerfile_sha256=hashlib.sha256(dockerfile.read_bytes()).hexdigest() if dockerfile.is_file() else "",
        input_digest=recorded, build_type=f"{url}/{INFRA_BUILD_TYPE_PATH}",
        invocation_id=labels.get(LABEL_RUN, ""), started_on=builder.get("started", ""),
        builder_version={k: v for k, v in builder.items() if k != "started" and v},
        context=_relative(cfg, recipe_dir), materials=tuple(materials))


def _pulled_facts(subject: str, base: str, upstream: str, source: Mapping[str, str], url: str,
                  common: Mapping[str, Any]) -> BuildFacts:
    pin = upstream_pin(upstream)
    if not pin:
        raise UsageError(f"{subject} was not built by `invoke bases` (no build facts) and [bases.{base}].upstream "
                         f"'{upstream}' is not pinned by digest", f"pin it in pipeline.toml (upstream = "
                         f"\"{upstream}@sha256:<digest>\") and rerun `invoke bases`, or build it from its recipe: "
                         "`invoke bases --no-pull --force`, then `invoke push`")
    pulled = source.get("pulled_from", "")
    if pulled != pin:
        raise UsageError(f"{subject} was not built by `invoke bases` (no build facts) and was not pulled from the "
                         f"pinned {pin} (the engine's image was {pulled or 'of no recorded origin'})",
                         "rerun `invoke bases` (it pulls the pinned digest), then `invoke push`")
    repo, _, pin_digest = pin.partition("@")
    return BuildFacts(
        **common, dockerfile="", dockerfile_sha256="", input_digest="", build_type=f"{url}/{PULLED_BUILD_TYPE_PATH}",
        invocation_id=source.get("run_id", ""),
        materials=({"uri": f"docker-image://{pin}", "name": PULLED_MATERIAL,
                    "digest": {"sha256": pin_digest.removeprefix("sha256:")},
                    "annotations": {"note": f"pulled from {pin}; not built by this pipeline"}},))


def _relative(cfg: Config, path: Path) -> str:
    return str(path.relative_to(cfg.root)) if path.is_relative_to(cfg.root) else str(path)
