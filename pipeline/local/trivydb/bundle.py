"""The air-gap procedure for Trivy's real DB: a bundle downloaded elsewhere, imported into the mirror.

Trivy's DB is published as an OCI artifact (`<repository>:2`) whose one layer, `db.tar.gz`
(media type application/vnd.aquasec.trivy.db.layer.v1.tar+gzip), holds `trivy.db` (BoltDB) and
`metadata.json` ({"Version": 2, "UpdatedAt", "NextUpdate", "DownloadedAt"}) at its root. On a connected
machine the layer is fetched with any OCI client (Trivy's "air-gapped environment" documentation uses
`oras pull <db repository>:2`); carried across, `invoke trivy-db --import db.tar.gz` checks it and pushes it
unchanged into [scan].db_repository, where every later scan takes it from (pipeline.stages.scan_db notices the
new artifact digest and fetches it even while the cached DB is still within its NextUpdate).
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import UsageError
from pipeline.tools.registry_answers import digest_of

DB_MEMBERS = ("trivy.db", "metadata.json")
BOLT_MAGIC = 0xED0CDAED   # bbolt's meta magic: little-endian right after the 16-byte header of page 0


@dataclass(frozen=True)
class BundleInfo:
    """What a db.tar.gz holds: its metadata.json fields, the DB size in bytes, and the archive's digest
    ("sha256:<hex>", tools/registry_answers.digest_of)."""

    path: Path
    schema_version: int
    updated_at: str
    next_update: str
    downloaded_at: str
    db_bytes: int
    digest: str

    def line(self) -> str:
        return (f"Trivy DB schema {self.schema_version}, updated {self.updated_at}, next update {self.next_update}, "
                f"{self.db_bytes / 1e6:.1f} MB (archive {self.digest[:23]}…)")


def inspect_bundle(path: Path) -> BundleInfo:
    """Check a db.tar.gz the way Trivy will read it; UsageError (exit 2) naming what is wrong and the fix."""
    fix = "pass the db.tar.gz layer of the trivy-db OCI artifact (e.g. from `oras pull <db repository>:2`)"
    if not path.is_file():
        raise UsageError(f"DB bundle not found: {path}", fix)
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in DB_MEMBERS if n not in members]
            if missing:
                raise UsageError(f"{path}: {', '.join(missing)} missing at the archive root "
                                 f"(it holds: {', '.join(sorted(members)) or 'no files'})", fix)
            meta_file = tar.extractfile(members["metadata.json"])
            db_file = tar.extractfile(members["trivy.db"])
            assert meta_file is not None and db_file is not None   # regular files, checked above
            meta_raw = meta_file.read()
            head = db_file.read(20)
            db_bytes = members["trivy.db"].size
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UsageError(f"{path}: not a gzip-compressed tar archive ({exc})", fix) from None
    try:
        meta: Any = json.loads(meta_raw)
    except ValueError:
        raise UsageError(f"{path}: metadata.json is not JSON", fix) from None
    if not isinstance(meta, dict) or meta.get("Version") != 2:
        version = meta.get("Version") if isinstance(meta, dict) else None
        raise UsageError(f"{path}: metadata.json says DB schema Version {version!r}; Trivy reads Version 2",
                         "download the DB of schema 2 (the `:2` tag of the trivy-db artifact)")
    if len(head) < 20 or int.from_bytes(head[16:20], "little") != BOLT_MAGIC:
        raise UsageError(f"{path}: trivy.db is not a BoltDB file", fix)
    digest = digest_of(path.read_bytes())
    return BundleInfo(path, 2, str(meta.get("UpdatedAt", "")), str(meta.get("NextUpdate", "")),
                      str(meta.get("DownloadedAt", "")), db_bytes, digest)


def import_bundle(path: Path, repository: str, *, username: str = "", password: str = "") -> tuple[BundleInfo, str]:
    """Check the bundle, then push it unchanged as `<repository>:2`; returns (its metadata, the pushed reference)."""
    from pipeline.local.trivydb import IMPORT_ANNOTATION, push_db

    info = inspect_bundle(path)
    pushed = push_db(path, repository, username=username, password=password,
                     annotations={IMPORT_ANNOTATION: info.digest,
                                  "org.opencontainers.image.created": info.updated_at})
    return info, pushed
