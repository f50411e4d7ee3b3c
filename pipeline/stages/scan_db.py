"""The vulnerability DB a scan uses: fetched once per run from the configured mirror, trusted only while the
mirror still serves the same artifact.

Trivy itself refreshes its cached DB only once the cache is past its NextUpdate, so a DB imported or
republished into the mirror (`invoke trivy-db --import`, `--seed`) would be ignored for up to a day. Here the
mirror's manifest digest of `<repository>:2` is compared with the one the cache was filled from (kept in
<cache>/db/mirror.json); when they differ the cached metadata is dropped and Trivy fetches the new DB.
The embedded mirror is first seeded (or reseeded) from [scan].mirror_seed when it needs it
(pipeline.local.trivydb.seed.ensure_seeded).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError, StageFailed
from pipeline.tools import trivy
from pipeline.tools.registry_clients import RegistryClients

Log = Callable[[str], None]
MIRROR_RECORD = "mirror.json"


def mirror_digest(registries: RegistryClients, repository: str) -> str:
    """Manifest digest of the DB artifact `<repository>:2` in its registry ("" when absent or unreachable)."""
    from pipeline.tools.registry_api import split_repository

    address, path = split_repository(repository)
    try:
        ref = registries.client(address).head_manifest(path, str(trivy.DB_TAG))
    except PipelineError:
        return ""
    return ref.digest if ref else ""


def cached_mirror_digest(cache: Path, repository: str) -> str:
    try:
        data = json.loads((cache / "db" / MIRROR_RECORD).read_text())
    except (OSError, ValueError):
        return ""
    return str(data.get(repository, "")) if isinstance(data, dict) else ""


def remember_mirror_digest(cache: Path, repository: str, digest: str) -> None:
    path = cache / "db" / MIRROR_RECORD
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data = {repository: digest} if not isinstance(data, dict) else {**data, repository: digest}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def prepare_db(cfg: Config, cache: Path, log: Log) -> trivy.DbInfo:
    """Fetch the DB from [scan].db_repository when the mirror serves a different one than the cache holds.

    Offline with the cached DB when the mirror cannot be reached (said in the log); ToolMissing when there
    is neither a mirror nor a cached DB. Returns what is in the cache afterwards.
    """
    repo = cfg.scan.db_repository
    if not repo:
        info = trivy.require_db(cache)
        log(f"scan: offline with the cached Trivy DB (updated {info.updated_at}, next update {info.next_update}); "
            "no [scan].db_repository set")
        return info
    from pipeline.local.trivydb.seed import ensure_seeded

    ensure_seeded(cfg, lambda m: log(f"scan: {m}"))   # the embedded mirror only: empty or an outdated seed
    registries = RegistryClients(cfg)
    creds = registries.credentials(repo.split("/", 1)[0])
    user, password = (creds.username, creds.password) if creds else ("", "")
    served = mirror_digest(registries, repo)
    before = trivy.db_info(cache)
    if served and before.present and served != cached_mirror_digest(cache, repo):
        (cache / "db" / "metadata.json").unlink(missing_ok=True)   # Trivy then fetches, whatever NextUpdate says
        log(f"scan: the mirror {repo} serves another DB ({served[:19]}) than the cached one; fetching it")
        before = trivy.DbInfo(False)
    try:
        from functools import partial

        from pipeline.core.retry import with_retries
        # a throttled or briefly unavailable mirror (by its error code) is retried before falling back
        info = with_retries(partial(trivy.download_db, repo, cache, timeout=min(600, cfg.scan.timeout_s),
                                    username=user, password=password), registries.policy)
    except StageFailed as exc:
        cached = trivy.db_info(cache)
        if not cached.present:
            raise
        log(f"scan: warning: {exc.message}; scanning offline with the cached DB (updated {cached.updated_at})")
        return cached
    if served:
        remember_mirror_digest(cache, repo, served)
    if info == before:
        log(f"scan: cached Trivy DB is current (updated {info.updated_at}, next update {info.next_update})")
    else:
        log(f"scan: Trivy DB fetched from {repo}: updated {info.updated_at or '?'}, next update "
            f"{info.next_update or '?'}")
    return info


def db_drift(cfg: Config, recorded: Mapping[str, Any], cache: Path, registries: RegistryClients) -> str | None:
    """Why a recorded vulnerability scan no longer holds for the DB, or None.

    recorded: the scan stage's fields (`db_mirror`: the mirror's artifact digest the scan's DB came from;
    `db_version`: trivy.db_info's version of it). The mirror is asked first, as the scan would ask it: a DB
    imported or republished there after the scan (`invoke trivy-db --import`, `--seed`) makes the scan stale
    even while the cached DB is still the old one (before, a resumed scan compared only the cache and kept
    verdicts made with the older DB). When the mirror does not answer, the cache's DB is compared instead.
    """
    repo = cfg.scan.db_repository
    served = mirror_digest(registries, repo) if repo else ""
    if served:
        if served != recorded.get("db_mirror"):
            was = str(recorded.get("db_mirror") or "not recorded")
            return f"the DB mirror {repo} serves another DB ({served[:19]}…) than the scan used ({was[:19]}…)"
        return None
    db = trivy.db_info(cache)
    if db.version != recorded.get("db_version"):
        return f"the Trivy DB changed ({recorded.get('db_version')} → {db.version})"
    return None
