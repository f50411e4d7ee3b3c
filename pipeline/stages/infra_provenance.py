"""The SLSA provenance facts of an infra image ([infra.NAME]: PostgreSQL, Redis, NATS…), signed and attested by
the sign stage like a service's (pipeline/stages/sign.py).

An infra image is not built by the build stage: `invoke bases` pulls its upstream image or builds it from the
recipe in pipeline/local/recipes/<recipe>/. Its push record keeps what the engine says of the local image it
was pushed from (`source`: reference, recipe digest, the bases run, creation time), and the provenance says
exactly that: build type `…/veza-pipeline/infra-image/v1`, the recipe's Dockerfile (by sha256) and directory,
the recipe digest as input digest, the local image by its image ID as the material, the release's commit
(the pipeline.toml and recipes that map this image; the recipe digest pins the recipe's content), and the
bases run and the image's creation time as the run's metadata. Pure: from the manifest and the config.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest, subject_slot
from pipeline.local.bases import RECIPES_DIR
from pipeline.trust.provenance import BuildFacts

INFRA_BUILD_TYPE_PATH = "veza-pipeline/infra-image/v1"


def infra_build_facts(cfg: Config, man: Manifest, subject: str, repository: str, digest: str) -> BuildFacts:
    """The provenance facts of the infra image `subject` (`infra/<name>`) pushed as repository@digest.

    UsageError when the manifest records no commit, the config has no [infra.NAME] of that name, or the
    image has no push record."""
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
    base = cfg.bases[cfg.infra[name].base]
    # the recipe of the release's tree when it has one (a clone), else the one this pipeline runs with
    in_tree = cfg.root / RECIPES_DIR.relative_to(RECIPES_DIR.parents[2]) / base.recipe
    recipe_dir = in_tree if in_tree.is_dir() else RECIPES_DIR / base.recipe
    dockerfile = recipe_dir / "Dockerfile"
    source = dict(pushed.source)
    version = man.version_facts()
    branch = str(version.get("branch") or "")
    url = cfg.source_url or f"file://{cfg.root}"
    return BuildFacts(
        repository=repository, digest=digest, commit=commit, dirty=bool(version.get("dirty")),
        source_uri=f"git+{url}" + (f"@refs/heads/{branch}" if branch else ""),
        dockerfile=_relative(cfg, dockerfile),
        dockerfile_sha256=hashlib.sha256(dockerfile.read_bytes()).hexdigest() if dockerfile.is_file() else "",
        input_digest=source.get("recipe_digest", ""),
        build_args={},
        base_images={source.get("ref", base.local): pushed.image_id},
        builder_id=cfg.signing.builder_id, build_type=f"{url}/{INFRA_BUILD_TYPE_PATH}",
        invocation_id=source.get("run_id", ""), finished_on=source.get("created", ""),
        context=_relative(cfg, recipe_dir))


def _relative(cfg: Config, path: Path) -> str:
    return str(path.relative_to(cfg.root)) if path.is_relative_to(cfg.root) else str(path)
