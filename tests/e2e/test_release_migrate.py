"""The migrate stage end to end (issue 30, item 2): releases of veza-backend-api from a fresh clone, on the real
engine, registry and the pipeline's own cluster, the database read back directly (psql in the PostgreSQL pod).

- a release applies the service's migrations in a Job on the pushed digest; the manifest and the report record
  the schema version the database holds;
- a new migration (written in the test's clone, committed there) upgrades the schema: version 2, the column
  exists, the new revision deployed;
- the same commit again resumes migrate only while the database (read by a `-schema-version` Job) is at the
  recorded version: a version row added by hand makes it run again and record 99;
- a broken migration stops the release before the deploy: exit 1 naming it, the Helm revision and the image the
  Deployment runs unchanged, the database still at version 2 without the broken migration's first statement
  (rolled back whole), the migrator's log in the report;
- a destructive migration without the contract mark is refused before anything runs: exit 2, one line naming the
  file and the statement, no Job run, the database unchanged;
- marked `-- veza:contract` while the running version's schema-uses.txt lists the column: refused (exit 2) before
  the Job; after a release that stops using it, the same contract step applies (schema version 3, column gone).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.release_support import (
    clone_repo,
    commit,
    flat,
    invoke,
    latest_report,
    local_env_in_namespace,
    manifest,
    namespace_of_its_own,
)

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]

NS = "veza-e2e-migrate"
SERVICE = "veza-backend-api"
MIGRATIONS = Path("services/backend-api/migrations")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, local_cluster: Path, machine_registry: str) -> Iterator[Path]:
    """A clone whose local environment releases into a namespace of its own (cluster and registry), with only the
    stages this needs; the namespace and what was pushed under it are removed afterwards."""
    dest = clone_repo(tmp_path_factory.mktemp("migrate"))
    local_env_in_namespace(dest, NS)
    with namespace_of_its_own(local_cluster, machine_registry, NS):
        yield dest


def _kubectl(kubeconfig: Path, *args: str) -> str:
    res = subprocess.run([str(Path(__file__).resolve().parents[2] / ".tools/bin/kubectl"), "--kubeconfig",
                          str(kubeconfig), "-n", NS, *args], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _psql(kubeconfig: Path, sql: str) -> str:
    """One query in the PostgreSQL pod, as the service's user with the Secret's password (from the pod's env)."""
    return _kubectl(kubeconfig, "exec", "deploy/postgres", "--", "sh", "-c",
                    f'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U veza -d veza -Atc "{sql}"').strip()


def _release(clone: Path) -> subprocess.CompletedProcess[str]:
    # every service: a --service push records no infra image, which the deploy (and the migrator's PostgreSQL) run
    return invoke(clone, "release", "--env", "local", timeout=900)


def _deployed(kubeconfig: Path) -> tuple[str, str]:
    """(the Helm release's revision, the image the backend Deployment runs)."""
    dep = json.loads(_kubectl(kubeconfig, "get", "deployment", SERVICE, "-o", "json"))
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    secrets = json.loads(_kubectl(kubeconfig, "get", "secret", "-l", "owner=helm,name=veza", "-o", "json"))
    return str(max(int(s["metadata"]["labels"]["version"]) for s in secrets["items"])), image


def _genre(kubeconfig: Path) -> str:
    """How many `tracks.genre` columns the database has ("1" or "0")."""
    return _psql(kubeconfig, "SELECT count(*) FROM information_schema.columns "
                             "WHERE table_name = 'tracks' AND column_name = 'genre'")


def _uses(clone: Path, *, add: str = "", remove: str = "") -> None:
    """Edit the clone's services/backend-api/schema-uses.txt (what the version declares it uses)."""
    path = clone / "services/backend-api/schema-uses.txt"
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() != remove]
    path.write_text("\n".join([*lines, *([add] if add else [])]) + "\n")


def _stage(clone: Path, name: str) -> str:
    """The status the latest run's report gives stage `name`."""
    return str({s["name"]: s["status"] for s in latest_report(clone, "local")["stages"]}[name])


def _no_jobs_left(kubeconfig: Path) -> None:
    deadline = time.monotonic() + 30
    while _kubectl(kubeconfig, "get", "jobs", "-l", "veza.pipeline/migrate=true", "-o", "name").strip():
        assert time.monotonic() < deadline, "the migrator Jobs were not removed"
        time.sleep(1)


def test_migrations_are_a_checked_release_stage(clone: Path, local_cluster: Path) -> None:
    t0 = time.monotonic()
    first = _release(clone)
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    rec = manifest(clone, "local")["services"][SERVICE]["migrate"]
    assert (rec["status"], rec["schema_version"], rec["applied"]) == ("migrated", 1, [1]), rec
    assert rec["digest"] == manifest(clone, "local")["services"][SERVICE]["push"]["digest"]
    assert latest_report(clone, "local")["services"][SERVICE]["schema_version"] == 1
    assert _psql(local_cluster, "SELECT max(version) FROM schema_migrations") == "1"
    _no_jobs_left(local_cluster)

    # a new (expand) migration, made in the clone: the schema goes to 2 and the new image is deployed
    (clone / MIGRATIONS / "0002_add_tracks_genre.sql").write_text(
        "ALTER TABLE tracks ADD COLUMN genre text NOT NULL DEFAULT '';\n")
    _uses(clone, add="tracks.genre")   # this version declares it uses the new column
    commit(clone, "feat: tracks have a genre")
    second = _release(clone)
    assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-3000:]
    m = manifest(clone, "local")["services"][SERVICE]
    assert (m["migrate"]["status"], m["migrate"]["schema_version"], m["migrate"]["applied"]) == ("migrated", 2, [2])
    assert latest_report(clone, "local")["services"][SERVICE]["schema_version"] == 2
    assert _psql(local_cluster, "SELECT max(version) FROM schema_migrations") == "2"
    assert _psql(local_cluster, "SELECT count(*) FROM information_schema.columns "
                                "WHERE table_name = 'tracks' AND column_name = 'genre'") == "1"
    revision, image = _deployed(local_cluster)
    assert image == f"{m['repository']}@{m['push']['digest']}"

    # resume trusts the database, not the journal: the same commit again resumes migrate (the database is at the
    # recorded version); after the database moved (a version row added by hand), the stage runs again and
    # records what the database holds
    again = _release(clone)
    assert again.returncode == 0, again.stdout[-6000:]
    assert _stage(clone, "migrate") == "resumed"
    _psql(local_cluster, "INSERT INTO schema_migrations (version, name) VALUES (99, 'by_hand')")
    moved = _release(clone)
    assert moved.returncode == 0, moved.stdout[-6000:]
    assert "the database is at schema version 99, the release recorded 2" in flat(moved.stdout), moved.stdout[-4000:]
    assert _stage(clone, "migrate") == "ok"
    rec = manifest(clone, "local")["services"][SERVICE]["migrate"]
    assert (rec["status"], rec["schema_version"], rec["applied"]) == ("current", 99, []), rec
    _psql(local_cluster, "DELETE FROM schema_migrations WHERE version = 99")
    assert _deployed(local_cluster) == (revision, image)

    # a broken migration: its first statement would apply, the second fails; the release stops before deploy
    (clone / MIGRATIONS / "0003_broken.sql").write_text(
        "ALTER TABLE tracks ADD COLUMN plays_cache integer;\nUPDATE no_such_table SET x = 1;\n")
    commit(clone, "feat: a migration that fails")
    broken = _release(clone)
    out = flat(broken.stdout + broken.stderr)
    assert broken.returncode == 1, out[-6000:]
    assert "veza-backend-api migration failed" in out and "0003_broken" in out and "no_such_table" in out, out[-4000:]
    assert "the database stays at schema version 2" in out, out[-4000:]
    assert _deployed(local_cluster) == (revision, image)
    assert _psql(local_cluster, "SELECT max(version) FROM schema_migrations") == "2"
    assert _psql(local_cluster, "SELECT count(*) FROM information_schema.columns "
                                "WHERE table_name = 'tracks' AND column_name = 'plays_cache'") == "0"
    report = latest_report(clone, "local")
    assert report["status"] != "ok"
    row = report["services"][SERVICE]
    assert (row["migrate"], row["schema_version"]) == ("failed", 2), row
    assert any("no_such_table" in line for line in row["migrate_log_tail"]), row
    assert "no_such_table" in Path(row["migrate_log"]).read_text()
    stages = {s["name"]: s["status"] for s in report["stages"]}
    assert stages["migrate"] == "failed" and stages["deploy"] == "not run", stages
    _no_jobs_left(local_cluster)

    # a destructive migration without the contract mark: refused before anything runs
    (clone / MIGRATIONS / "0003_broken.sql").unlink()
    (clone / MIGRATIONS / "0003_drop_genre.sql").write_text(
        "-- genre was a mistake\nALTER TABLE tracks DROP COLUMN genre;\n")
    commit(clone, "refactor: drop the genre column")
    refused = _release(clone)
    out = flat(refused.stdout + refused.stderr)
    assert refused.returncode == 2, out[-4000:]
    assert "migration services/backend-api/migrations/0003_drop_genre.sql:2: `ALTER TABLE tracks DROP COLUMN genre` " \
           "drops column tracks.genre" in out, out[-4000:]
    assert "veza:contract" in out
    assert _deployed(local_cluster) == (revision, image)
    assert _genre(local_cluster) == "1"

    # marked as a contract step while the running version (its image's own schema-uses.txt, asked with
    # -schema-uses) still uses the column: refused, nothing changed
    (clone / MIGRATIONS / "0003_drop_genre.sql").write_text("-- veza:contract\nALTER TABLE tracks DROP COLUMN genre;\n")
    commit(clone, "refactor: drop the genre column (contract)")
    still = _release(clone)
    out = flat(still.stdout + still.stderr)
    assert still.returncode == 2, out[-4000:]
    assert f"but the running version still uses tracks.genre (schema-uses.txt of the running {image})" in out, \
        out[-3000:]
    assert _deployed(local_cluster) == (revision, image) and _genre(local_cluster) == "1"

    # expand/contract done right: a release that stops using the column (the drop held back), then the drop
    (clone / MIGRATIONS / "0003_drop_genre.sql").rename(clone.parent / "0003_drop_genre.sql")
    _uses(clone, remove="tracks.genre")
    commit(clone, "refactor: stop using the genre column")
    stop = _release(clone)
    assert stop.returncode == 0, stop.stdout[-6000:]
    (clone.parent / "0003_drop_genre.sql").rename(clone / MIGRATIONS / "0003_drop_genre.sql")
    commit(clone, "refactor: drop the genre column (contract)")
    drop = _release(clone)
    assert drop.returncode == 0, drop.stdout[-6000:]
    rec = manifest(clone, "local")["services"][SERVICE]["migrate"]
    assert (rec["status"], rec["schema_version"], rec["applied"]) == ("migrated", 3, [3]), rec
    assert _genre(local_cluster) == "0"
    print(f"migrate e2e: {time.monotonic() - t0:.0f}s")
