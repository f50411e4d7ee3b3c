"""Two environments on one machine registry, then what runs re-checked (issue 27, items 3 and 8), from a fresh clone
as a user runs it, on the real engine, registry, Trivy and the pipeline's own cluster.

- dev releases, then local releases the same commit (local pushes to its own veza-local namespace and signs with
  its own key): `invoke verify-images --env dev` still passes. Before, local pushed to veza-dev and its signing
  replaced dev's attestation of the shared digests, so this failed.
- `invoke audit --env dev` scans the digests dev's pods run: clean (exit 0) against the release's DB; after a DB
  with a CRITICAL Go standard-library advisory is imported into the mirror (`invoke trivy-db --import`), exit 3
  naming it as new; a justified, dated ignore entry for it makes the audit pass again (the scan gate's rules).

One dev and one local release serve every check (releases dominate the time). The clone's DB mirror is a
repository of its own in the machine registry (never the shared 127.0.0.1:5000/trivy/db); its manifests and its
Trivy cache are removed afterwards, and so are both releases.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.release_support import clone_repo, flat, invoke, manifest, remove_release

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]

ADVISORY = "GO-2099-2727"


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory, local_cluster: Path) -> Iterator[tuple[Path, str]]:
    """A clone with its own DB mirror, released to dev then to local (same commit); yields (clone, mirror)."""
    from pipeline.tools import trivy

    tmp = tmp_path_factory.mktemp("two-envs")
    clone = clone_repo(tmp)
    mirror = f"127.0.0.1:5000/trivy/db-e2e-{uuid.uuid4().hex[:8]}"
    toml = clone / "pipeline.toml"
    toml.write_text(toml.read_text().replace('db_repository = "127.0.0.1:5000/trivy/db"',
                                             f'db_repository = "{mirror}"', 1))
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "test: a DB mirror of its own"], check=True, timeout=60)
    for ns in ("veza-dev", "veza-local"):
        remove_release(local_cluster, ns)
    try:
        for env in ("dev", "local"):
            run = invoke(clone, "release", "--env", env, "--yes")
            assert run.returncode == 0, (env, run.stdout[-8000:] + run.stderr[-3000:])
        yield clone, mirror
    finally:
        for ns in ("veza-dev", "veza-local"):
            remove_release(local_cluster, ns)
        _delete_repository(mirror)
        shutil.rmtree(trivy.default_cache_dir(mirror), ignore_errors=True)


def _delete_repository(repository: str) -> None:
    """Delete every manifest of a test repository in the machine registry (its storage has delete enabled)."""
    from pipeline.tools.registry_api import RegistryClient, split_repository

    address, repo = split_repository(repository)
    client = RegistryClient(address)
    try:
        for tag in client.tags(repo):
            ref = client.head_manifest(repo, tag)
            if ref is not None:
                client.request("DELETE", f"/v2/{repo}/manifests/{ref.digest}", ok=(202, 404))
    except Exception:   # the registry went away: nothing left to delete there
        pass


def test_a_local_release_leaves_dev_verifiable(released: tuple[Path, str]) -> None:
    clone, _ = released
    dev, local = manifest(clone, "dev"), manifest(clone, "local")
    for name, svc in dev["services"].items():
        assert svc["push"]["repository"].startswith("127.0.0.1:5000/veza-dev/"), name
        assert local["services"][name]["push"]["repository"].startswith("127.0.0.1:5000/veza-local/"), name
    res = invoke(clone, "verify-images", "--env", "dev")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "image(s) signed and attested" in flat(res.stdout + res.stderr)


def _bundle(tmp: Path) -> Path:
    """A Trivy DB (the pipeline's offline writer) whose one advisory is CRITICAL in every Go standard library
    before 1.99 — in every Go service dev runs — dated now, as a DB imported after the release is."""
    from pipeline.local import trivydb

    advisories = trivydb.parse_advisories([{
        "id": ADVISORY, "source": "go::The Go Vulnerability Database", "package": "stdlib",
        "vulnerable": ["<1.99.0"], "patched": ["1.99.0"], "severity": "CRITICAL",
        "title": "test advisory imported after the release"}])
    db_dir = trivydb.build_db(advisories, tmp / "bundle-db", now=datetime.now(UTC))
    return trivydb.package_db(db_dir, tmp / "db.tar.gz")


def test_audit_rescans_what_runs_against_a_db_imported_after_the_release(
        released: tuple[Path, str], tmp_path: Path) -> None:
    clone, _ = released
    report = clone / ".pipeline" / "dev" / "reports" / "audit.json"
    clean = invoke(clone, "audit", "--env", "dev")
    assert clean.returncode == 0, clean.stdout[-4000:] + clean.stderr[-2000:]
    first = json.loads(report.read_text())
    dev = manifest(clone, "dev")
    running = {img["digest"] for img in first["images"]}
    assert {svc["push"]["digest"] for svc in dev["services"].values()} <= running   # observed from the pods
    assert all(img["status"] == "pass" and img["containers"] for img in first["images"]), first["images"]
    assert not [d for d in first["disagreements"] if "manifest records" in d], first["disagreements"]

    imported = invoke(clone, "trivy-db", "--import", str(_bundle(tmp_path)))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    blocked = invoke(clone, "audit", "--env", "dev")
    assert blocked.returncode == 3, blocked.stdout[-4000:] + blocked.stderr[-2000:]
    out = flat(blocked.stdout + blocked.stderr)
    print(blocked.stdout[-6000:], blocked.stderr[-2000:])   # the table and the blocking findings, shown by -rA
    assert ADVISORY in out and "findings at the threshold" in out, out[-3000:]
    second = json.loads(report.read_text())
    go_services = {n for n in dev["services"] if n != "veza-chat-server"}   # the chat server is Rust
    hit = {img["name"] for img in second["images"] if any(ADVISORY in b for b in img["blocking"])}
    assert hit == go_services, second["images"]
    assert all(any(ADVISORY in n for n in img["new"]) for img in second["images"] if img["name"] in hit)
    assert second["db"]["version"] != first["db"]["version"]

    # the ignore file applies as in the scan gate: a justified, dated entry lets the audit pass
    until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    ignore = clone / ".trivyignore.yaml"
    ignore.write_text(ignore.read_text() + f'  - id: {ADVISORY}\n    statement: "test: accepted until the fix"\n'
                                           f"    expired_at: {until}\n")
    accepted = invoke(clone, "audit", "--env", "dev")
    assert accepted.returncode == 0, accepted.stdout[-4000:] + accepted.stderr[-2000:]
