"""The embedded DB mirror's seed: published from [scan].mirror_seed, kept current, never over an imported DB.

The embedded environment's mirror ([scan].db_repository on the loopback registry) starts empty. It is seeded
with a DB built from the seed file (pipeline/local/trivydb/local-mirror.yaml). Every DB built here carries the
seed file's sha256 as a manifest annotation (SEED_ANNOTATION), so:
  - an empty mirror is seeded;
  - a mirror holding a DB seeded from an older seed file is reseeded (the seed was edited);
  - a mirror holding an imported DB (`invoke trivy-db --import`, annotated IMPORT_ANNOTATION) is left alone;
  - a DB without any annotation is a seed pushed before seeds were annotated: it is reseeded.
`invoke trivy-db --seed` republishes the seed unconditionally (even over an imported DB: the user asked).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pipeline.core.config import Config
from pipeline.core.errors import ConfigError
from pipeline.local.trivydb import DB_SCHEMA_VERSION, IMPORT_ANNOTATION, SEED_ANNOTATION, make_mirror, seed_digest

Log = Callable[[str], None]


def is_embedded(repository: str) -> bool:
    """A mirror on the loopback registry (the pipeline's own): the only kind the seed may write to."""
    return repository.startswith(("127.0.0.1:", "localhost:"))


def mirror_annotations(cfg: Config) -> dict[str, str] | None:
    """The manifest annotations of the mirror's DB artifact ({} when it has none); None when it holds no DB."""
    from pipeline.tools.credentials import resolve
    from pipeline.tools.registry_api import Credentials, RegistryClient, split_repository

    address, path = split_repository(cfg.scan.db_repository)
    creds = resolve(address, cfg.registry.username_env, cfg.registry.password_env)
    client = RegistryClient(address, credentials=Credentials(creds.username, creds.password) if creds else None,
                            timeout=10)
    got = client.get_manifest(path, str(DB_SCHEMA_VERSION))
    if got is None:
        return None
    try:
        annotations = json.loads(got[1]).get("annotations") or {}
    except (ValueError, AttributeError):
        annotations = {}
    return {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {}


def publish_seed(cfg: Config, log: Log) -> str:
    """Build the DB from [scan].mirror_seed and push it to [scan].db_repository; returns the pushed reference."""
    from pipeline.tools.credentials import resolve

    if cfg.scan.mirror_seed is None or not cfg.scan.db_repository:
        raise ConfigError("pipeline.toml: [scan] needs mirror_seed and db_repository to publish the seed",
                          'set mirror_seed = "pipeline/local/trivydb/local-mirror.yaml" and db_repository')
    repo = cfg.scan.db_repository
    creds = resolve(repo.split("/", 1)[0], cfg.registry.username_env, cfg.registry.password_env)
    make_mirror(cfg.scan.mirror_seed, push=repo, username=creds.username if creds else "",
                password=creds.password if creds else "", log=log)
    return f"{repo}:{DB_SCHEMA_VERSION}"


def ensure_seeded(cfg: Config, log: Log) -> str:
    """Seed the embedded mirror when it is empty or holds an older seed; returns what was done.

    One of: "not embedded" (no seed or not a loopback mirror: nothing to do), "seeded", "reseeded",
    "current" (the mirror holds this seed), "kept" (it holds another DB, e.g. an imported real one).
    """
    repo, seed = cfg.scan.db_repository, cfg.scan.mirror_seed
    if not repo or seed is None or not is_embedded(repo):
        return "not embedded"
    from pipeline.local.embedded_registry import ensure_local_registry

    ensure_local_registry(cfg, repo.split("/", 1)[0])
    annotations = mirror_annotations(cfg)
    present = annotations is not None
    if annotations and annotations.get(SEED_ANNOTATION) == seed_digest(seed):
        return "current"
    if annotations and IMPORT_ANNOTATION in annotations:
        log(f"the Trivy DB mirror {repo} holds an imported DB ({annotations[IMPORT_ANNOTATION][:19]}): kept")
        return "kept"
    why = "is empty" if not present else "holds an older seed"
    log(f"the Trivy DB mirror {repo} {why}; seeding it from {seed.name}")
    publish_seed(cfg, log)
    return "reseeded" if present else "seeded"
