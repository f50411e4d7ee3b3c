"""`[environments.<env>.backup]`: where the migrate stage puts the `pg_dump` it takes before a migration.

    [environments.prod.backup]
    enabled = true                      # default: true, except where generate_secrets = true (see below)
    dir = "/var/backups/veza/prod"      # absolute, ~, $VAR, or relative to the project root;
                                        # default: <state_dir>/<env>/backups (beside the environment's manifest)
    keep = 10                           # backups kept per service, newest first; older ones are deleted after a
                                        # new backup succeeds (0 = keep every backup)

A missing table means the defaults: every environment that keeps its credentials (no `generate_secrets`) is
backed up into `.pipeline/<env>/backups/` on the machine that runs the release. That is a choice: refusing a
release to an environment without a named backup place would break every existing configuration, and a backup
on the release machine is better than none; name a durable `dir` for prod. An environment with
`generate_secrets = true` (the embedded `local` one) has a database the deploy recreates with invented
credentials on a fresh cluster: nothing worth keeping, so it is not backed up unless `enabled = true` says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config_reader import Table

DEFAULT_SUBDIR = "backups"   # under <state_dir>/<env>/
DEFAULT_KEEP = 10            # a release a week keeps about two months of restore points


@dataclass(frozen=True)
class Backup:
    enabled: bool = True
    dir: Path | None = None   # None: <state_dir>/<env>/backups (backup_dir() resolves it)
    keep: int = DEFAULT_KEEP  # backups kept per service after a new one (0: all)


def read_backup(et: Table, root: Path, *, generate_secrets: bool) -> Backup:
    """The optional `backup` table of an environment. ConfigError (exit 2) naming the key for a wrong type, an
    empty `dir`, a `dir` that names an existing file, a negative `keep`, or an unknown key."""
    t = et.table("backup", required=False)
    enabled = t.flag("enabled", not generate_secrets)
    path: Path | None = None
    if "dir" in t.data:
        text = t.text("dir")
        if not text.strip():
            t.fail(t.key("dir"), "is empty", 'name a directory, e.g. dir = "/var/backups/veza", or remove the key '
                                             "(default: .pipeline/<env>/backups)")
        p = Path(os.path.expanduser(os.path.expandvars(text)))
        path = p if p.is_absolute() else root / p
        if path.exists() and not path.is_dir():
            t.fail(t.key("dir"), f"'{text}' is a file, not a directory", "point dir at a directory (it is created "
                                                                         "when missing)")
    t.used.add("dir")
    keep = t.integer("keep", DEFAULT_KEEP, lo=0, hi=100_000)
    t.done()
    return Backup(enabled, path, keep)


def backup_dir(state_dir: Path, env_name: str, backup: Backup) -> Path:
    """Where `env_name`'s backups go: the configured `dir`, else <state_dir>/<env>/backups."""
    return backup.dir if backup.dir is not None else state_dir / env_name / DEFAULT_SUBDIR
