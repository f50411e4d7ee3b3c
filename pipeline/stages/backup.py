"""The database backup the migrate stage takes before it applies a migration, and the catalog of those backups.

Where: `[environments.<env>.backup]` (pipeline/core/config_backup.py; default `.pipeline/<env>/backups/`).
How:   `pg_dump --format=custom` runs inside the environment's PostgreSQL pod (the infra Deployment `postgres`
       in the namespace: pipeline/local/infra.py; its image, built from Debian's packages, carries the client
       tools), its stdout streamed by `kubectl exec` into the file here. The password stays in the pod: the
       script reads `$POSTGRES_PASSWORD` from the pod's own environment (the Secret), so no argv on this
       machine and no line printed carries it.
What:  `<service>-r<revision>-<UTC time>.dump` and, beside it, `<same>.json`: the file, its size and sha256, the
       schema version it holds, the Helm revision that was serving, the time, the database and user. The same
       record goes into the manifest (`services.<name>.migrate.backup`) and the report. The catalog (the
       .json files) outlives the manifest, which a new release replaces: `invoke restore` and the rollback
       message read it (pipeline/stages/restore.py).
A failed backup raises StageFailed before the migrator runs: nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageFailed
from pipeline.core.manifest import atomic_write
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget

POSTGRES_POD = "deploy/postgres"     # the infra Deployment (pipeline/local/infra.py infra_documents)
DUMP_TIMEOUT_S = 600
READY_WAIT_S = 30
# The pod's own password variable (infra.py: POSTGRES_PASSWORD from the Secret's db-password), expanded by the
# pod's shell: the script is the same text whatever the password is.
_AUTH = 'PGPASSWORD="$POSTGRES_PASSWORD"'


@dataclass(frozen=True)
class Database:
    """The database a migrator works on, reached through the PostgreSQL pod of the environment's namespace."""

    kube: KubeTarget
    name: str = "veza"
    user: str = "veza"
    pod: str = POSTGRES_POD

    def script(self, tool: str, *args: str) -> list[str]:
        """`sh -c` argv running `tool` against the database as the user, the password from the pod's env."""
        quoted = " ".join(_sh_quote(a) for a in (*args, "-h", "127.0.0.1", "-U", self.user, "-d", self.name))
        return ["sh", "-c", f"{_AUTH} exec {tool} {quoted}"]


def _sh_quote(word: str) -> str:
    return word if word and all(c.isalnum() or c in "-_=./:," for c in word) else "'" + word.replace("'", "'\\''") + "'"


def applied_migrations(db: Database) -> list[tuple[int, str]]:
    """(version, name) of every migration the database records (`schema_migrations`), oldest first; [] when the
    table does not exist yet. StageFailed naming the pod when psql cannot ask."""
    # PostgreSQL plans a query whole, so a missing table is asked about first, not in the same statement
    if _psql(db, "SELECT to_regclass('schema_migrations') IS NOT NULL").strip() != "t":
        return []
    return parse_applied(_psql(db, "SELECT coalesce(string_agg(version::text || ' ' || name, ',' ORDER BY version),"
                                   " '') FROM schema_migrations"))


def _psql(db: Database, sql: str) -> str:
    """One query's unaligned output (psql -At). StageFailed naming the pod when it fails after READY_WAIT_S."""
    deadline = time.monotonic() + READY_WAIT_S
    while True:   # a PostgreSQL just started (its port open) may still refuse for a moment: "starting up"
        res = kubectl.exec_files(db.kube, db.pod, db.script("psql", "-Atc", sql), timeout=60)
        if res.ok or time.monotonic() > deadline:
            break
        time.sleep(2)
    if not res.ok:
        raise StageFailed(f"could not read the schema version of database {db.name} in {db.kube.namespace}/"
                          f"{db.pod}: {tail(res.stderr)}",
                          f"check the PostgreSQL pod: kubectl -n {db.kube.namespace} get pods")
    return res.stdout


def parse_applied(text: str) -> list[tuple[int, str]]:
    """psql's one line `1 init,2 add_genre` → [(1, "init"), (2, "add_genre")] (blank: none)."""
    out = []
    for item in text.strip().split(","):
        version, _, name = item.strip().partition(" ")
        if version.isdigit():
            out.append((int(version), name))
    return sorted(out)


def tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-3:]) or "no output"


def run_restore(db: Database, dump: Path, *, timeout_s: float) -> Any:
    """`pg_restore --clean --if-exists --single-transaction --no-owner` of the custom-format `dump` into `db`, the
    file streamed on the pod's stdin (kubectl exec -i). The Result of kubectl (never raises on a failure)."""
    return kubectl.exec_files(db.kube, db.pod, db.script("pg_restore", "--clean", "--if-exists",
                                                         "--single-transaction", "--no-owner", "--exit-on-error"),
                              timeout=timeout_s, stdin_from=dump)


def backup_name(service: str, revision: int | None, at: datetime) -> str:
    """`<service>-r<revision>-<YYYYmmddTHHMMSSZ>` (r0: no revision served yet, a first install)."""
    return f"{service}-r{revision or 0}-{at.strftime('%Y%m%dT%H%M%SZ')}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def take_backup(db: Database, directory: Path, *, service: str, env: str, revision: int | None,
                schema_version: int, now: datetime | None = None) -> dict[str, Any]:
    """pg_dump (custom format) of `db` into `directory`, its record written beside it as JSON. Returns the record:
    file, size (bytes), sha256, schema_version (what the dump holds), revision (the Helm revision serving when it
    was taken; None before a first install), at (UTC, RFC 3339), env, service, database, user.
    StageFailed (nothing kept) when the directory cannot be made or pg_dump fails."""
    at = (now or datetime.now(UTC)).replace(microsecond=0)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageFailed(f"the backup directory {directory} cannot be created: {exc.strerror}",
                          f"fix [environments.{env}.backup] dir, or the directory's permissions") from exc
    base = backup_name(service, revision, at)
    dump = directory / f"{base}.dump"
    try:
        res = kubectl.exec_files(db.kube, db.pod, db.script("pg_dump", "--format=custom", "--no-owner"),
                                 timeout=DUMP_TIMEOUT_S, stdout_to=dump)
    except StageFailed:
        dump.unlink(missing_ok=True)
        raise
    except OSError as exc:
        raise StageFailed(f"the backup {dump} cannot be written: {exc.strerror}",
                          f"fix [environments.{env}.backup] dir, or the directory's permissions") from exc
    if not res.ok or dump.stat().st_size == 0:
        dump.unlink(missing_ok=True)
        raise StageFailed(f"the backup of database {db.name} failed (pg_dump in {db.kube.namespace}/{db.pod}: "
                          f"{tail(res.stderr)}); no migration ran, nothing changed",
                          f"check the PostgreSQL pod (kubectl -n {db.kube.namespace} get pods), then release again")
    rec: dict[str, Any] = {"file": str(dump), "size": dump.stat().st_size, "sha256": sha256_of(dump),
                           "schema_version": schema_version, "revision": revision,
                           "at": at.isoformat().replace("+00:00", "Z"), "env": env, "service": service,
                           "database": db.name, "user": db.user, "format": "pg_dump custom"}
    atomic_write(directory / f"{base}.json", json.dumps(rec, indent=2) + "\n")
    return rec


def catalog(directory: Path, service: str = "") -> list[dict[str, Any]]:
    """Every backup record in `directory` (of `service` when given) whose dump file is still there, oldest first.
    Records that cannot be read are left out (a half-written or foreign file is not a backup)."""
    out = []
    for meta in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            rec = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or not Path(str(rec.get("file", ""))).is_file():
            continue
        if service and rec.get("service") != service:
            continue
        out.append(rec)
    return sorted(out, key=lambda r: str(r.get("at", "")))


def prune(directory: Path, service: str, keep: int, *, taken: str) -> list[str]:
    """Delete `service`'s backups in `directory` beyond the `keep` newest (by their recorded time), never the one
    whose dump file is `taken` (the backup just made). keep = 0 deletes nothing. Returns the deleted dump files,
    oldest first. A file that cannot be deleted is left and not listed (the next backup tries again); the record
    goes first, so a half-deleted backup is never offered to `invoke restore` (catalog() needs both)."""
    if keep <= 0:
        return []
    records = [r for r in catalog(directory, service) if r.get("file") != taken]
    doomed = records[:max(0, len(records) - (keep - 1))]
    gone = []
    for rec in doomed:
        dump = Path(str(rec["file"]))
        try:
            dump.with_suffix(".json").unlink(missing_ok=True)
            dump.unlink(missing_ok=True)
        except OSError:
            continue
        gone.append(str(dump))
    return gone


def for_revision(records: list[dict[str, Any]], revision: int) -> dict[str, Any] | None:
    """The newest backup taken while `revision` was serving, or None."""
    hits = [r for r in records if r.get("revision") == revision]
    return hits[-1] if hits else None


def revisions_with_backups(records: list[dict[str, Any]]) -> list[int]:
    """The Helm revisions that have a backup, ascending (0 / None, a first install's, left out)."""
    return sorted({int(r["revision"]) for r in records if isinstance(r.get("revision"), int) and r["revision"]})
