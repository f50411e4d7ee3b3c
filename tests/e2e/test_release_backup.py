"""Backup and restore around a migration (issue 30, item 4), from a fresh clone on the real engine, registry and the
pipeline's own cluster; the database read directly (psql in the PostgreSQL pod).

dev (not `generate_secrets`, so backed up by default) releases into a namespace of its own, its backups in a
directory the clone's pipeline.toml names ([environments.dev.backup] dir):
- the first release (a fresh database, migration 1 pending) and a second one with a new expand migration each take
  a pg_dump before migrating; the second's record (revision 1 serving, schema version 1, file, size, sha256, time)
  is in the manifest's `services.veza-backend-api.migrate.backup` and the report, its file matching its sha256;
- `invoke rollback --to 1` across the migration says that 0002_add_tracks_genre stays applied, that it is
  expand-only, and how to undo it (`invoke restore --env dev --to 1`, the backup's time, writes since lost);
- dev marked `confirm = true` (as prod is): `invoke restore` without --yes and without a terminal is exit 2 naming
  --yes, the database untouched;
- back on revision 2's code, `invoke restore --env dev --to 1 --yes` brings the release back to revision 1's image
  and the database to schema version 1: the row written after the migration is gone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.tools.kubectl import PORT_RANGE_ENV
from tests.e2e.release_support import (
    clone_repo,
    commit,
    flat,
    invoke,
    kubectl,
    latest_report,
    manifest,
    namespace_of_its_own,
)

# Its own namespace, registry repositories and port-forward range: it runs in the second cluster lane
# (tests/lanes.py), beside the first, holding the cluster shared.
pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.cluster_parallel,
              pytest.mark.slow]

NS = "veza-e2e-backup"
PORTS = {PORT_RANGE_ENV: "21700-21749"}   # the releases', rollbacks' and restores' port-forwards
SERVICE = "veza-backend-api"
MIGRATION = Path("services/backend-api/migrations/0002_add_tracks_genre.sql")


def _section(text: str, name: str) -> tuple[str, str, str]:
    """(before, the [environments.NAME] table's text, after) of a pipeline.toml."""
    start = text.index(f"[environments.{name}]\n")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end + 1
    return text[:start], text[start:end], text[end:]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, local_cluster: Path, machine_registry: str) -> Iterator[Path]:
    """A clone whose dev environment releases into a namespace of its own with only the stages this needs, its
    backups in a directory beside the clone; the namespace and what was pushed under it are removed afterwards."""
    dest = clone_repo(tmp_path_factory.mktemp("backup"))
    toml = dest / "pipeline.toml"
    before, dev, after = _section(toml.read_text(), "dev")
    dev = dev.replace('"build", "scan", "push"', '"build", "push"', 1)
    dev = dev.replace('registry_namespace = "veza-dev"', f'registry_namespace = "{NS}"', 1)
    dev = dev.replace('namespace = "veza-dev"', f'namespace = "{NS}"', 1)
    toml.write_text(before + dev + after + f'\n[environments.dev.backup]\ndir = "{dest.parent / "backups"}"\n')
    commit(dest, "test: dev in a namespace of its own, its backups beside the clone")
    with namespace_of_its_own(local_cluster, machine_registry, NS):
        yield dest


def _kubectl(kubeconfig: Path, *args: str) -> str:
    return kubectl(kubeconfig, "-n", NS, *args)


def _psql(kubeconfig: Path, sql: str) -> str:
    return _kubectl(kubeconfig, "exec", "deploy/postgres", "--", "sh", "-c",
                    f'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U veza -d veza -Atc "{sql}"').strip()


def _image(kubeconfig: Path) -> str:
    dep = json.loads(_kubectl(kubeconfig, "get", "deployment", SERVICE, "-o", "json"))
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def _release(clone: Path) -> subprocess.CompletedProcess[str]:
    return invoke(clone, "release", "--env", "dev", "--yes", extra_env=PORTS, timeout=900)


def test_backup_before_migration_and_restore(clone: Path, local_cluster: Path) -> None:
    t0 = time.monotonic()
    first = _release(clone)
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    image1 = _image(local_cluster)

    (clone / MIGRATION).write_text("ALTER TABLE tracks ADD COLUMN genre text NOT NULL DEFAULT '';\n")
    uses = clone / "services/backend-api/schema-uses.txt"
    uses.write_text(uses.read_text() + "tracks.genre\n")
    commit(clone, "feat: tracks have a genre")
    second = _release(clone)
    assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-3000:]
    image2 = _image(local_cluster)
    assert image2 != image1

    rec = manifest(clone, "dev")["services"][SERVICE]["migrate"]
    b = rec["backup"]
    assert (rec["schema_version"], b["schema_version"], b["revision"]) == (2, 1, 1), rec
    dump = Path(b["file"])
    assert dump.parent == clone.parent / "backups" and dump.stat().st_size == b["size"] > 0, b
    assert b["sha256"] == "sha256:" + hashlib.sha256(dump.read_bytes()).hexdigest()
    assert dump.read_bytes()[:5] == b"PGDMP"          # pg_dump's custom format
    assert latest_report(clone, "dev")["services"][SERVICE]["migrate_backup"]["file"] == b["file"]
    out = flat(second.stdout)
    assert f"backup {b['file']}" in out, out[-4000:]

    # data written after the migration, using the new column
    _psql(local_cluster, "INSERT INTO tracks (id, title, created_by, genre) VALUES ('after', 't', 'e2e', 'jazz')")

    # a rollback across the migration says what it leaves
    back = invoke(clone, "rollback", "--env", "dev", "--to", "1", extra_env=PORTS)
    out = flat(back.stdout + back.stderr)
    assert back.returncode == 0, out[-4000:]
    assert "these migrations stay applied: 0002_add_tracks_genre: expand-only" in out, out[-3000:]
    assert f"to undo them: invoke restore --env dev --to 1 (the backup of {b['at']}, schema version 1; every write " \
           "since then is lost)" in out, out[-3000:]
    assert _image(local_cluster) == image1
    assert _psql(local_cluster, "SELECT count(*) FROM tracks WHERE id = 'after'") == "1"

    # back on revision 2's code; dev guarded like prod: no --yes and no terminal is refused, nothing changes
    fwd = invoke(clone, "rollback", "--env", "dev", "--to", "2", extra_env=PORTS)
    assert fwd.returncode == 0, fwd.stdout[-3000:] + fwd.stderr[-2000:]
    toml = clone / "pipeline.toml"
    before, dev, after = _section(toml.read_text(), "dev")
    toml.write_text(before + dev.replace("confirm = false", "confirm = true", 1)
                    .replace("auto_key = true", "auto_key = false", 1) + after)
    refused = invoke(clone, "restore", "--env", "dev", "--to", "1", extra_env=PORTS)
    out = flat(refused.stdout + refused.stderr)
    assert refused.returncode == 2, out[-3000:]
    assert "needs confirmation and there is no terminal to ask" in out and "--yes" in out, out
    assert _psql(local_cluster, "SELECT max(version) FROM schema_migrations") == "2"

    unknown = invoke(clone, "restore", "--env", "dev", "--to", "2", "--yes", extra_env=PORTS)
    out = flat(unknown.stdout + unknown.stderr)
    assert unknown.returncode == 2 and "(revisions with a backup in" in out and ": 1)" in out, out[-3000:]

    done = invoke(clone, "restore", "--env", "dev", "--to", "1", "--yes", extra_env=PORTS)
    out = flat(done.stdout + done.stderr)
    assert done.returncode == 0, out[-5000:]
    assert "rolling it back first" in out and "to undo them" not in out, out[-3000:]   # it is the undo
    assert _image(local_cluster) == image1
    assert _psql(local_cluster, "SELECT max(version) FROM schema_migrations") == "1"
    assert _psql(local_cluster, "SELECT count(*) FROM information_schema.columns "
                                "WHERE table_name = 'tracks' AND column_name = 'genre'") == "0"
    assert _psql(local_cluster, "SELECT count(*) FROM tracks WHERE id = 'after'") == "0"
    restored = manifest(clone, "dev")["services"][SERVICE]["migrate"]["restore"]
    assert (restored["revision"], restored["schema_version"], restored["backup"]) == (1, 1, b["file"]), restored

    # the database password is on no line printed and in no record (pg_dump/pg_restore read it in the pod)
    password = base64.b64decode(json.loads(_kubectl(local_cluster, "get", "secret", "veza-secrets", "-o", "json"))
                                ["data"]["db-password"]).decode()
    records = (clone / ".pipeline/dev/manifest.json").read_text() + Path(b["file"]).with_suffix(".json").read_text()
    for run in (first, second, back, fwd, refused, unknown, done):
        assert password not in run.stdout + run.stderr
    assert password not in records
    print(f"backup e2e: {time.monotonic() - t0:.0f}s")
