"""`invoke restore --env ENV --to REVISION`, and what a rollback across a migration does not undo.

restore_database(): the backup taken while REVISION was serving (the catalog of pipeline/stages/backup.py)
  → a protected environment (`confirm = true`: prod) asks for its name typed, or --yes; no terminal and no --yes:
    exit 2 naming the flag (CI=true does not skip it: a restore loses every write since the backup)
  → the dump's sha256 checked against its record
  → the release brought back to REVISION first when it is not serving it (rollback_release: trust-checked, exit 3
    with nothing changed when an image does not verify), so code and schema match once the data is back
  → `pg_restore --clean --if-exists --single-transaction --no-owner` inside the PostgreSQL pod, the dump on its
    stdin (one transaction: a failure leaves the database as it was)
  → the schema version read back and compared with the backup's; the restore recorded in the manifest
    (`services.<name>.migrate.restore`) when a migrate record exists.
crossing_lines(): the lines a rollback prints when it goes back to a revision whose schema version (the backup
  taken while it served holds it) is lower than the database's.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.config_backup import backup_dir
from pipeline.core.errors import StageFailed, UsageError
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.reporter import Reporter
from pipeline.stages import backup
from pipeline.stages import migrate_rules as rules
from pipeline.tools.kubectl import KubeTarget

RESTORE_TIMEOUT_S = 900


def confirm_restore(env: Environment, revision: int, rec: dict[str, Any], yes: bool, *,
                    tty: bool | None = None, ask: Any = input) -> None:
    """Ask before restoring an environment with `confirm = true`: the environment's name typed back. UsageError
    (exit 2) without a terminal and without --yes, or on another answer. `tty`/`ask` default to stdin's."""
    if not env.confirm or yes:
        return
    if not (sys.stdin.isatty() if tty is None else tty):
        raise UsageError(f"restoring {env.name}'s database to revision {revision}'s backup ({rec.get('at')}) "
                         "needs confirmation and there is no terminal to ask",
                         f"pass --yes: invoke restore --env {env.name} --to {revision} --yes")
    answer = ask(f"Restore {env.name}'s database to the backup of {rec.get('at')} (revision {revision}, schema "
                 f"version {rec.get('schema_version')})? Every write since is lost. Type {env.name} to confirm: ")
    if str(answer).strip() != env.name:
        raise UsageError("restore not confirmed", f"type {env.name} exactly, or pass --yes")


def pick_backup(records: list[dict[str, Any]], revision: int, env: str, where: Path) -> dict[str, Any]:
    """The newest backup taken while `revision` served; UsageError (exit 2) listing the revisions that have one."""
    rec = backup.for_revision(records, revision) if revision else None
    if rec is not None:
        return rec
    have = backup.revisions_with_backups(records)
    listed = ", ".join(str(r) for r in have) or "none"
    raise UsageError(f"no backup of {env} was taken while revision {revision} was serving (revisions with a "
                     f"backup in {where}: {listed})",
                     f"invoke restore --env {env} --to {have[-1]}" if have else
                     "a backup is taken by the migrate stage before it applies a migration")


def _serving(kube: KubeTarget, release: str, revision: int) -> bool:
    """The release serves `revision`: it is the deployed one, or the deployed one is Helm's copy of it
    (a rollback's new revision says "Rollback to N")."""
    from pipeline.tools import helm

    status = helm.status(kube, release)
    if status is None or status.status != "deployed":
        return False
    return status.revision == revision or status.description.strip() == f"Rollback to {revision}"


def restore_database(cfg: Config, env: Environment, revision: int, *, yes: bool, reporter: Reporter) -> dict[str, Any]:
    """Restore `env`'s database to the backup taken while Helm revision `revision` served, and bring the release
    back to that revision when it does not serve it. Returns the restore record (revision, backup file, at,
    schema_version, rolled_back_to, restored_at). UsageError (exit 2): no --to, no backup for it (the revisions
    that have one listed), not confirmed; StageFailed (exit 1): the dump changed or pg_restore failed (the
    database unchanged: one transaction); PolicyBlocked (exit 3) / DeployFailed from the rollback."""
    from pipeline.stages.deploy.rollout import rollback_release
    from pipeline.stages.deploy.target import ReleaseTarget

    where = backup_dir(cfg.state_dir, env.name, env.backup)
    if revision <= 0:
        have = ", ".join(str(r) for r in backup.revisions_with_backups(backup.catalog(where))) or "none"
        raise UsageError("restore needs the revision whose backup to restore",
                         f"pass --to REVISION (revisions with a backup: {have})")
    rec = pick_backup(backup.catalog(where), revision, env.name, where)
    confirm_restore(env, revision, rec, yes)
    dump = Path(str(rec["file"]))
    if backup.sha256_of(dump) != rec.get("sha256"):
        raise StageFailed(f"the backup {dump} does not match its recorded sha256 {rec.get('sha256')}: not restored",
                          "restore another revision's backup, or find the original file")
    rt = ReleaseTarget.of(env)
    rolled_to = 0
    if not _serving(rt.kube, rt.release, revision):
        reporter.info(f"restore {env.name}: the release does not serve revision {revision}: rolling it back first "
                      "(code and schema must match)")
        rolled_to = rollback_release(cfg, env, revision, reporter=reporter, schema_note=False)
    db = backup.Database(rt.kube, str(rec.get("database") or "veza"), str(rec.get("user") or "veza"))
    reporter.info(f"restore {env.name}: pg_restore of {dump.name} ({rec.get('at')}, schema version "
                  f"{rec.get('schema_version')}) into database {db.name}; writes since {rec.get('at')} are lost")
    res = backup.run_restore(db, dump, timeout_s=RESTORE_TIMEOUT_S)
    if not res.ok:
        raise StageFailed(f"pg_restore of {dump} failed ({backup.tail(res.stderr)}); it ran in one transaction, "
                          "so the database is as it was",
                          f"check the PostgreSQL pod: kubectl -n {env.namespace} get pods")
    held = max((v for v, _ in backup.applied_migrations(db)), default=0)
    if held != rec.get("schema_version"):
        raise StageFailed(f"after the restore the database is at schema version {held}, the backup held "
                          f"{rec.get('schema_version')}", f"inspect: kubectl -n {env.namespace} exec deploy/postgres")
    out = {"revision": revision, "backup": str(dump), "backup_at": rec.get("at"), "schema_version": held,
           "rolled_back_to": rolled_to or None,
           "restored_at": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")}
    _record(cfg, env, str(rec.get("service") or ""), out)
    reporter.info(f"restored {env.name}: database at schema version {held} (the backup of {rec.get('at')}), "
                  f"the release serving revision {revision}'s images and values"
                  + (f" as revision {rolled_to}" if rolled_to else ""))
    return out


def _record(cfg: Config, env: Environment, service: str, out: dict[str, Any]) -> None:
    """`services.<service>.migrate.restore` in the environment's manifest (when it has a migrate record)."""
    m = Manifest.load_or_none(manifest_path(cfg.state_dir, env.name))
    raw = m.stage_result(service, "migrate") if m is not None and service else None
    if m is None or not raw:
        return
    raw.pop("at", None)
    m.record(service, "migrate", {**raw, "restore": out})


def crossing_lines(cfg: Config, env: Environment, kube: KubeTarget, revision: int) -> list[str]:
    """What a rollback to `revision` leaves in the database: [] when no backup records the schema version that
    revision served with, or when the database is not above it. Else the migrations that stay applied (each
    said expand-only, compatible with the older code, or a contract step), and the restore that undoes them
    with the backup's time (writes since are lost). Reads the database (psql in its pod)."""
    where = backup_dir(cfg.state_dir, env.name, env.backup)
    rec = backup.for_revision(backup.catalog(where), revision)
    if rec is None:
        return []
    db = backup.Database(kube, str(rec.get("database") or "veza"), str(rec.get("user") or "veza"))
    old = int(rec.get("schema_version") or 0)
    stay = [(v, n) for v, n in backup.applied_migrations(db) if v > old]
    return crossing_message(env.name, revision, old, stay, _kinds(cfg, str(rec.get("service") or "")),
                            str(rec.get("at")))


def crossing_message(env: str, revision: int, old: int, stay: list[tuple[int, str]], kinds: dict[int, str],
                     at: str) -> list[str]:
    """The lines of crossing_lines() (pure): `stay` the (version, name) above `old`, `kinds` version → what it is,
    `at` the backup's time. [] when nothing stays."""
    if not stay:
        return []
    lines = [f"the rollback to revision {revision} changes code, not data: revision {revision} ran at schema "
             f"version {old}, the database stays at {stay[-1][0]}; these migrations stay applied:"]
    for v, n in stay:
        lines.append(f"  {v:04d}_{n}: {kinds.get(v, 'kind unknown (not in this tree)')}")
    lines.append(f"to undo them: invoke restore --env {env} --to {revision} (the backup of {at}, "
                 f"schema version {old}; every write since then is lost)")
    return lines


def _kinds(cfg: Config, service: str) -> dict[int, str]:
    """version → what the working tree's migration file of `service` is, for the rollback message."""
    out: dict[int, str] = {}
    svc = next((s for s in cfg.services if s.name == service), None)
    if svc is None:
        return out
    for mig in rules.read_migrations(svc.context / rules.MIGRATIONS_DIR, cfg.root):
        out[mig.version] = ("contract step: removes what older code may use; restore before relying on it"
                            if mig.contract or rules.removals(mig) else
                            "expand-only: it only adds, the older code works with it")
    return out


def say_crossing(cfg: Config, env: Environment, kube: KubeTarget, revision: int, say: Any) -> None:
    """crossing_lines() through `say`; a database that cannot be read is said in one line, never an error (the
    rollback itself must not depend on it)."""
    from pipeline.core.errors import PipelineError

    if not revision:
        return
    try:
        lines = crossing_lines(cfg, env, kube, revision)
    except PipelineError as exc:
        lines = [f"the database's schema version could not be read after the rollback ({exc.one_line()})"]
    for line in lines:
        say(line)
