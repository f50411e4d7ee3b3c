"""The backup/restore logic that needs no cluster: `[environments.<env>.backup]` read strictly, the catalog of
backups, the choice of a revision's backup, the confirmation of a guarded environment, the pg_dump script (no
password in it) and the rollback's note on the migrations that stay (issue 30, item 4)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import load_config
from pipeline.core.config_backup import backup_dir
from pipeline.core.errors import ConfigError, UsageError
from pipeline.stages import backup
from pipeline.stages.restore import _kinds, confirm_restore, crossing_message, pick_backup
from pipeline.tools.kubectl import KubeTarget
from tests.unit.test_config import VALID, project

__all__ = ["project"]   # the fixture, shared with test_config.py


def _cfg(project: Path, extra: str = "", dev: str = "") -> Any:
    text = VALID.replace('tags = ["sha", "branch"]\n', 'tags = ["sha", "branch"]\n' + dev, 1)
    (project / "pipeline.toml").write_text(text + extra)
    return load_config(project / "pipeline.toml")


def _error(project: Path, extra: str, dev: str = "") -> str:
    with pytest.raises(ConfigError) as info:
        _cfg(project, extra, dev)
    return info.value.one_line()


def test_no_backup_table_backs_up_into_the_state_dir(project: Path) -> None:
    cfg = _cfg(project)
    for name in ("dev", "prod"):
        env = cfg.env(name)
        assert env.backup.enabled and env.backup.dir is None
        assert backup_dir(cfg.state_dir, name, env.backup) == cfg.state_dir / name / "backups"


def test_generate_secrets_environments_are_not_backed_up_unless_asked(project: Path) -> None:
    assert not _cfg(project, dev="generate_secrets = true\n").env("dev").backup.enabled
    cfg = _cfg(project, "\n[environments.dev.backup]\nenabled = true\n", dev="generate_secrets = true\n")
    assert cfg.env("dev").backup.enabled


def test_a_named_dir_relative_absolute_or_home(project: Path, tmp_path: Path) -> None:
    cfg = _cfg(project, '\n[environments.dev.backup]\ndir = "var/backups"\n'
                        f'[environments.prod.backup]\ndir = "{tmp_path / "abs"}"\n')
    assert backup_dir(cfg.state_dir, "dev", cfg.env("dev").backup) == project / "var/backups"
    assert cfg.env("prod").backup.dir == tmp_path / "abs"
    assert _cfg(project, '\n[environments.dev.backup]\ndir = "~/b"\n').env("dev").backup.dir == Path.home() / "b"


@pytest.mark.parametrize(("table", "expected"), [
    ('dir = ""', "environments.dev.backup.dir: is empty"),
    ("dir = 3", "environments.dev.backup.dir: expected string, got integer 3"),
    ('enabled = "yes"', "environments.dev.backup.enabled: expected boolean"),
    ('dri = "x"', "environments.dev.backup.dri: unknown key (fix: did you mean 'dir'?"),
    ('dir = "pipeline.toml"', "environments.dev.backup.dir: 'pipeline.toml' is a file, not a directory"),
    ("keep = -1", "environments.dev.backup.keep: -1 is out of range"),
    ('keep = "5"', "environments.dev.backup.keep: expected integer"),
])
def test_a_bad_backup_table_is_one_line_naming_the_key(project: Path, table: str, expected: str) -> None:
    assert expected in _error(project, f"\n[environments.dev.backup]\n{table}\n")


def test_a_backup_that_is_not_a_table(project: Path) -> None:
    assert "environments.dev.backup: must be a table" in _error(project, "", dev='backup = "x"\n')


def test_applied_migrations_parse() -> None:
    assert backup.parse_applied("2 add_genre,1 init\n") == [(1, "init"), (2, "add_genre")]
    assert backup.parse_applied("\n") == []


def test_the_dump_script_reads_the_password_in_the_pod() -> None:
    db = backup.Database(KubeTarget(Path("/k"), "", "ns"), "veza", "o'brien")
    argv = db.script("pg_dump", "--format=custom")
    assert argv[:2] == ["sh", "-c"]
    assert argv[2] == ('PGPASSWORD="$POSTGRES_PASSWORD" exec pg_dump --format=custom -h 127.0.0.1 '
                       "-U 'o'\\''brien' -d veza")


def _rec(directory: Path, service: str, revision: int | None, at: str, schema: int) -> dict[str, Any]:
    dump = directory / f"{service}-{revision}-{at}.dump"
    dump.write_bytes(b"PGDMP")
    rec = {"file": str(dump), "service": service, "revision": revision, "at": at, "schema_version": schema}
    (directory / f"{dump.stem}.json").write_text(json.dumps(rec))
    return rec


def test_the_catalog_and_the_backup_of_a_revision(tmp_path: Path) -> None:
    first = _rec(tmp_path, "api", None, "2026-01-01T00:00:00Z", 0)
    old = _rec(tmp_path, "api", 3, "2026-01-02T00:00:00Z", 1)
    new = _rec(tmp_path, "api", 3, "2026-01-03T00:00:00Z", 2)
    gone = _rec(tmp_path, "api", 5, "2026-01-04T00:00:00Z", 3)
    Path(gone["file"]).unlink()                       # its dump was removed: no longer a backup
    (tmp_path / "half.json").write_text("{")          # unreadable: not a backup
    records = backup.catalog(tmp_path)
    assert records == [first, old, new]
    assert backup.for_revision(records, 3) == new and backup.for_revision(records, 4) is None
    assert backup.revisions_with_backups(records) == [3]
    assert backup.catalog(tmp_path / "missing") == []
    assert backup.backup_name("api", None, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "api-r0-20260102T030405Z"


def test_a_revision_without_a_backup_lists_those_that_have_one(tmp_path: Path) -> None:
    records = [_rec(tmp_path, "api", 2, "a", 1), _rec(tmp_path, "api", 4, "b", 2)]
    assert pick_backup(records, 4, "prod", tmp_path)["at"] == "b"
    with pytest.raises(UsageError) as info:
        pick_backup(records, 3, "prod", tmp_path)
    line = info.value.one_line()
    assert f"no backup of prod was taken while revision 3 was serving (revisions with a backup in {tmp_path}: 2, 4)" \
        in line and "invoke restore --env prod --to 4" in line
    with pytest.raises(UsageError, match="revisions with a backup in .*: none"):
        pick_backup([], 1, "prod", tmp_path)


def test_a_guarded_environment_asks_for_its_name(project: Path) -> None:
    cfg = _cfg(project)
    prod = dataclasses.replace(cfg.env("prod"), confirm=True)
    rec = {"at": "2026-01-02T00:00:00Z", "schema_version": 1}
    with pytest.raises(UsageError) as info:
        confirm_restore(prod, 3, rec, False, tty=False)
    assert "needs confirmation and there is no terminal to ask" in info.value.one_line()
    assert "invoke restore --env prod --to 3 --yes" in info.value.one_line()
    confirm_restore(prod, 3, rec, True, tty=False)                                  # --yes
    confirm_restore(prod, 3, rec, False, tty=True, ask=lambda _: "prod\n")          # the name typed
    with pytest.raises(UsageError, match="restore not confirmed"):
        confirm_restore(prod, 3, rec, False, tty=True, ask=lambda _: "y")
    confirm_restore(cfg.env("dev"), 3, rec, False, tty=False)                       # not guarded: no question


def test_the_rollback_note_names_what_stays_and_how_to_undo_it() -> None:
    kinds = {2: "expand-only: it only adds, the older code works with it", 3: "contract step: removes …"}
    lines = crossing_message("staging", 4, 1, [(2, "add_genre"), (3, "drop_x"), (7, "by_hand")], kinds,
                             "2026-01-02T00:00:00Z")
    assert lines == [
        "the rollback to revision 4 changes code, not data: revision 4 ran at schema version 1, the database "
        "stays at 7; these migrations stay applied:",
        "  0002_add_genre: expand-only: it only adds, the older code works with it",
        "  0003_drop_x: contract step: removes …",
        "  0007_by_hand: kind unknown (not in this tree)",
        "to undo them: invoke restore --env staging --to 4 (the backup of 2026-01-02T00:00:00Z, schema version 1; "
        "every write since then is lost)"]
    assert crossing_message("staging", 4, 2, [], kinds, "t") == []


def test_what_each_migration_that_stays_is(project: Path) -> None:
    migrations = project / "svc/api/migrations"
    migrations.mkdir()
    (migrations / "0001_init.sql").write_text("CREATE TABLE t (id text);\n")
    (migrations / "0002_add.sql").write_text("ALTER TABLE t ADD COLUMN c text;\n")
    (migrations / "0003_drop.sql").write_text("-- veza:contract\nALTER TABLE t DROP COLUMN c;\n")
    kinds = _kinds(_cfg(project), "api")
    assert kinds[1].startswith("expand-only") and kinds[2].startswith("expand-only")
    assert kinds[3].startswith("contract step")
    assert _kinds(_cfg(project), "no-such-service") == {}


def test_run_files_streams_bytes_both_ways(tmp_path: Path) -> None:
    from pipeline.tools.proc import run_files

    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(bytes(range(256)) * 4096)            # 1 MiB, every byte value: nothing decoded as text
    res = run_files(["cat"], timeout=30, stdin_from=src, stdout_to=dst)
    assert res.ok and res.stdout == "" and dst.read_bytes() == src.read_bytes()
    assert backup.sha256_of(dst) == backup.sha256_of(src)
    failed = run_files(["sh", "-c", "echo nope >&2; exit 3"], timeout=30)
    assert (failed.returncode, failed.stderr.strip()) == (3, "nope")


def test_a_failed_backup_stops_with_one_line_and_keeps_nothing(tmp_path: Path) -> None:
    """kubectl itself (the real binary) against a cluster that does not answer: the dump fails, nothing is kept."""
    from pipeline.core.errors import StageFailed

    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    db = backup.Database(KubeTarget(tmp_path / "kubeconfig", "", "ns"))
    with pytest.raises(StageFailed) as info:
        backup.take_backup(db, tmp_path / "backups", service="api", env="prod", revision=3, schema_version=1)
    assert "the backup of database veza failed (pg_dump in ns/deploy/postgres:" in info.value.one_line()
    assert "no migration ran, nothing changed" in info.value.one_line()
    assert list((tmp_path / "backups").iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(StageFailed, match="the backup directory .* cannot be created"):
        backup.take_backup(db, tmp_path / "file" / "sub", service="api", env="prod", revision=3, schema_version=1)


def test_keep_defaults_to_ten_and_is_read(project: Path) -> None:
    assert _cfg(project).env("dev").backup.keep == 10
    assert _cfg(project, "\n[environments.dev.backup]\nkeep = 0\n").env("dev").backup.keep == 0


def test_pruning_keeps_the_newest_per_service_and_never_the_one_just_taken(tmp_path: Path) -> None:
    api = [_rec(tmp_path, "api", r, f"2026-01-0{r}T00:00:00Z", r) for r in range(1, 6)]
    other = _rec(tmp_path, "chat", 1, "2026-01-01T00:00:00Z", 1)
    # the one just taken is kept even if its recorded time sorts first (a clock set back)
    taken = _rec(tmp_path, "api", 9, "2025-12-31T00:00:00Z", 9)
    gone = backup.prune(tmp_path, "api", 3, taken=taken["file"])
    assert gone == [api[0]["file"], api[1]["file"], api[2]["file"]]
    assert backup.catalog(tmp_path, "api") == [taken, api[3], api[4]]
    assert backup.catalog(tmp_path, "chat") == [other]           # another service's backups are not counted
    assert not any(Path(str(r["file"])).with_suffix(".json").exists() for r in api[:3])
    assert backup.prune(tmp_path, "api", 0, taken=taken["file"]) == []   # keep = 0: every backup stays
    assert backup.prune(tmp_path, "api", 3, taken=taken["file"]) == []   # already within the limit
