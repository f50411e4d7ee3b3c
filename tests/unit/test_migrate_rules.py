"""The migrate stage's pure parts: the expand/contract rules (pglast, PostgreSQL's parser), the migrator Job's
document (restricted pod, the Secret the deploy uses, pinned image) and what its log says."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.gate import pod_security
from pipeline.stages import migrate_job
from pipeline.stages import migrate_rules as rules
from pipeline.stages.deploy.values import merged_values

ROOT = Path(__file__).resolve().parents[2]


def _dir(tmp_path: Path, **files: str) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    for name, sql in files.items():
        (d / f"{name}.sql").write_text(sql)
    return d


def _refusal(d: Path) -> str:
    with pytest.raises(UsageError) as err:
        rules.check_static(rules.read_migrations(d))
    assert err.value.exit_code == 2
    return err.value.message


def test_the_services_own_migrations_pass_and_its_declaration_reads() -> None:
    ctx = ROOT / "services/backend-api"
    migrations = rules.read_migrations(ctx / rules.MIGRATIONS_DIR)
    assert migrations and migrations[0].version == 1
    assert rules.check_static(migrations) == []
    uses = rules.parse_uses((ctx / rules.USES_FILE).read_text(), "schema-uses.txt")
    assert {"tracks.id", "tracks.title", "schema_migrations"} <= uses


@pytest.mark.parametrize(("sql", "what"), [
    ("ALTER TABLE tracks DROP COLUMN genre;", "drops column tracks.genre"),
    ("ALTER TABLE tracks ADD COLUMN a int, DROP COLUMN IF EXISTS b;", "drops column tracks.b"),
    ("DROP TABLE IF EXISTS public.tracks CASCADE;", "drops table tracks"),
    ("ALTER TABLE tracks RENAME COLUMN title TO name;", "renames column tracks.title"),
    ("ALTER TABLE tracks RENAME TO songs;", "renames table tracks"),
    ("ALTER TABLE tracks ALTER COLUMN title TYPE varchar(20);", "changes the type of tracks.title"),
    ("DROP VIEW v;", "drops view v"),
    # the statement is found wherever it sits: after a comment, a string holding a semicolon, a dollar quote
    ("-- drops nothing; ALTER TABLE x DROP COLUMN y\nSELECT 'a;b', $q$ ; $q$;\n\n"
     "  alter table \"Tracks\" drop column x;", "drops column tracks.x"),
])
def test_an_unmarked_removal_is_refused_naming_the_file_line_and_statement(tmp_path: Path, sql: str, what: str) -> None:
    d = _dir(tmp_path, **{"0001_create": "CREATE TABLE tracks (id text);", "0002_change": sql})
    msg = _refusal(d)
    assert msg.startswith(f"migration {d / '0002_change.sql'}:"), msg
    with pytest.raises(UsageError) as err:   # named relative to the project root when the stage gives it
        rules.check_static(rules.read_migrations(d, tmp_path))
    assert err.value.message.startswith("migration migrations/0002_change.sql:"), err.value.message
    assert what in msg and "expand/contract" in msg, msg
    line = int(msg.split(".sql:", 1)[1].split(":", 1)[0])
    stmt = msg.split("`")[1]
    assert stmt.split()[0].upper() in ("ALTER", "DROP") and sql.splitlines()[line - 1].strip().lower().startswith(
        stmt.split()[0].lower()), (line, stmt)


def test_expand_only_statements_pass(tmp_path: Path) -> None:
    d = _dir(tmp_path, **{"0001_a": "CREATE TABLE t (a int);\nALTER TABLE t ADD COLUMN b text DEFAULT 'x';\n"
                                    "CREATE INDEX t_b ON t (b); UPDATE t SET b = 'y' WHERE b IS NULL;\n"
                                    "CREATE VIEW v AS SELECT a FROM t; DROP INDEX t_b;"})
    assert rules.check_static(rules.read_migrations(d)) == []


@pytest.mark.parametrize(("sql", "why"), [
    ("CREATE INDEX CONCURRENTLY i ON t (a);", "CREATE INDEX CONCURRENTLY cannot run inside a transaction"),
    ("DROP INDEX CONCURRENTLY i;", "DROP INDEX CONCURRENTLY"),
    ("VACUUM t;", "VACUUM"),
    ("COMMIT;", "transaction command"),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$;", "DO block"),
])
def test_what_cannot_run_in_one_transaction_or_be_read_is_refused(tmp_path: Path, sql: str, why: str) -> None:
    msg = _refusal(_dir(tmp_path, **{"0001_a": sql}))
    assert why in msg and "0001_a.sql:1" in msg, msg


def test_bad_sql_names_its_line(tmp_path: Path) -> None:
    msg = _refusal(_dir(tmp_path, **{"0001_a": "SELECT 1;\n\nALTER TABL t;"}))
    assert "0001_a.sql:3: PostgreSQL cannot parse it" in msg, msg


@pytest.mark.parametrize("name", ["1-a.sql", "0000_zero.sql", "abc.sql"])
def test_a_misnamed_file_is_refused(tmp_path: Path, name: str) -> None:
    d = _dir(tmp_path)
    (d / name).write_text("SELECT 1;")
    with pytest.raises(UsageError, match="NNNN_what.sql"):
        rules.read_migrations(d)


def test_two_files_of_one_version_are_refused(tmp_path: Path) -> None:
    d = _dir(tmp_path, **{"0001_a": "SELECT 1;", "001_b": "SELECT 1;"})
    with pytest.raises(UsageError, match="share version 1"):
        rules.read_migrations(d)


def test_a_marked_contract_step_passes_only_when_the_running_version_no_longer_uses_it(tmp_path: Path) -> None:
    d = _dir(tmp_path, **{"0001_a": "CREATE TABLE t (a int, b int);",
                          "0002_drop_b": "\n-- veza:contract\n-- b was read by 0.3 only\nALTER TABLE t DROP COLUMN b;"})
    marked = rules.check_static(rules.read_migrations(d))
    assert [(r.what, r.objects, r.line) for r in marked] == [("drops column", ("t.b",), 4)]
    rules.check_running(marked, None, "nothing runs")          # first install: no old pods to protect
    rules.check_running(marked, {"t.a", "u"}, "uses.txt")      # the running version stopped using b
    for uses, hit in (({"t.a", "t.b"}, "t.b"), ({"t"}, "t")):  # a column, or the whole table
        with pytest.raises(UsageError) as err:
            rules.check_running(marked, uses, "schema-uses.txt at abc123")
        assert err.value.exit_code == 2
        assert f"still uses {hit} (schema-uses.txt at abc123)" in err.value.message
        assert "0002_drop_b.sql:4" in err.value.message


def test_dropping_a_table_hits_every_column_the_running_version_lists(tmp_path: Path) -> None:
    d = _dir(tmp_path, **{"0001_a": "-- veza:contract\nDROP TABLE t;"})
    marked = rules.check_static(rules.read_migrations(d))
    assert rules.still_used(marked[0], {"t.a", "t.b", "tt.a"}) == ["t.a", "t.b"]


def test_the_marker_must_open_the_file(tmp_path: Path) -> None:
    d = _dir(tmp_path, **{"0001_a": "SELECT 1;\n-- veza:contract\nALTER TABLE t DROP COLUMN b;"})
    assert "drops column t.b" in _refusal(d)


@pytest.mark.parametrize("line", ["tracks.", "a.b.c", "tracks title", "1tracks"])
def test_a_bad_declaration_line_is_named(line: str) -> None:
    with pytest.raises(UsageError, match=r"uses.txt:2: "):
        rules.parse_uses(f"tracks\n{line}\n", "uses.txt")


def _merged() -> dict[str, object]:
    chart = ROOT / "helm/veza"
    return merged_values(chart, [chart / "values-local.yaml"], {})


def test_the_job_is_a_restricted_pinned_pod_with_the_deploys_secret() -> None:
    image = "127.0.0.1:5000/veza-local/veza-backend-api@sha256:" + "a" * 64
    doc = migrate_job.job_document("veza-backend-api-migrate-aaaaaaaaaaaa", "veza-backend-api", image,
                                   migrate_job.MIGRATE_FLAG, _merged(), run_id="r1", deadline_s=300)
    assert pod_security.enforce_restricted([doc], where="test") == 1
    spec = doc["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 300
    c = spec["template"]["spec"]["containers"][0]
    assert c["image"] == image and c["args"] == ["-migrate"]
    env = {e["name"]: e for e in c["env"]}
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "veza-secrets", "key": "db-password"}
    assert (env["DB_HOST"]["value"], env["DB_NAME"]["value"], env["DB_USER"]["value"]) == ("postgres", "veza", "veza")
    assert "JWT_SECRET" not in env


def test_job_names_fit_kubernetes() -> None:
    name = migrate_job.job_name("veza-backend-api", "sha256:" + "b" * 64, migrate_job.VERSION_FLAG)
    assert name == "veza-backend-api-version-bbbbbbbbbbbb" and len(name) <= 63


def test_the_last_log_record_with_a_version_is_what_the_migrator_said() -> None:
    log = ('not json\n{"msg":"migrated","applied":[2],"schema_version":2,"latest":2}\n'
           '{"msg":"other"}\n{"msg":"migration failed","error":"boom","schema_version":2}\n')
    run = migrate_job.JobRun(False, log, migrate_job.last_version_record(log))
    assert run.schema_version == 2 and run.record["error"] == "boom"
    assert migrate_job.last_version_record('{"msg":"x"}\n') == {}


def _ctx_skip(tmp_path: Path, services: tuple[str, ...], options: object) -> str | None:
    import dataclasses

    from pipeline.core.config import load_config
    from pipeline.core.reporter import PlainReporter
    from pipeline.release.runner import open_run
    from pipeline.stages.migrate import MigrateStage
    from tests.unit.test_runner import info

    cfg = dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=tmp_path / "state")
    with open_run(cfg, cfg.env("local"), PlainReporter(sink=lambda _: None), services=services,
                  options=options, creates_manifest=True, info=info()) as ctx:  # type: ignore[arg-type]
        return MigrateStage().skip(ctx)


def test_the_stage_applies_to_the_services_that_own_migrations_and_never_in_a_dry_run(tmp_path: Path) -> None:
    from pipeline.contract.options import RunOptions

    assert _ctx_skip(tmp_path, (), RunOptions()) is None
    assert _ctx_skip(tmp_path, ("veza-backend-api",), RunOptions()) is None
    assert _ctx_skip(tmp_path, ("veza-docs", "veza-chat-server"), RunOptions()) == "no selected service has migrations"
    assert _ctx_skip(tmp_path, (), RunOptions(dry_run=True)) == "dry run: no migration runs"
