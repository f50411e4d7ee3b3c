"""The air-gap procedure: a DB bundle (the db.tar.gz of the trivy-db artifact) imported into the mirror
replaces the seeded DB, and the next scan uses it and reports its version. Real registry, real Trivy,
the real `invoke trivy-db --import` task. Ports 19350-19399."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.local import trivydb
from pipeline.local.registry import LocalRegistry
from pipeline.local.trivydb.seed import ensure_seeded
from pipeline.stages.scan import scan_images
from tests.integration.scan_fixtures import ImageFactory, built_manifest, debian_files
from tests.ports import PortPool

pytestmark = [pytest.mark.engine, pytest.mark.registry]

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "pipeline" / "local" / "trivydb" / "local-mirror.yaml"
free_port = PortPool(range(19350, 19400)).take
BUNDLE_TIME = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)


def _config(tmp_path: Path, registry: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text("\n".join([
        "[project]", 'name = "veza"', "", "[registry]", f'address = "{registry}"', 'namespace = "imp"', "",
        "[scan]", f'db_repository = "{registry}/trivy/db"', f'mirror_seed = "{SEED}"', 'scanners = ["vuln"]', "",
        "[[services]]", 'name = "svc-a"', 'context = "ctx"', 'dockerfile = "ctx/Dockerfile"', "port = 18080", "",
        "[environments.test]", 'namespace = "t"', 'values_file = "v.yaml"', 'stages = ["build", "scan"]',
        'tags = ["sha"]', 'scan_threshold = "HIGH"', "",
    ]))
    return path


def _bundle(tmp_path: Path) -> Path:
    """A bundle the pipeline builds: one bash advisory the seed does not have, dated BUNDLE_TIME."""
    advisories = trivydb.parse_advisories([{"id": "CVE-2099-4242", "source": "debian 12", "package": "bash",
                                            "fixed": "5.2.15-3", "severity": "MEDIUM", "title": "bundle advisory"}])
    db_dir = trivydb.build_db(advisories, tmp_path / "bundle-db", now=BUNDLE_TIME)
    return trivydb.package_db(db_dir, tmp_path / "db.tar.gz")


def _invoke(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEZA_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _scan(cfg: Config, man: Manifest, cache: Path, logs: list[str]) -> dict[str, object]:
    """The scan stage's summary fields (DB version, counts), with status ok (a blocked gate fails the test)."""
    summary = scan_images(cfg, cfg.env("test"), man, PlainReporter(sink=logs.append), None, cache_dir=cache)
    return {**summary.fields, "status": "ok"}


def test_an_imported_bundle_replaces_the_seed_and_the_next_scan_reports_its_version(
        tmp_path: Path, scan_image_factory: ImageFactory) -> None:
    ref, image_id = scan_image_factory("debian", debian_files())
    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        config = _config(tmp_path, reg.address)
        cfg = load_config(config, check_files=False)
        assert ensure_seeded(cfg, lambda _m: None) == "seeded"
        assert ensure_seeded(cfg, lambda _m: None) == "current"
        man = built_manifest(tmp_path, {"svc-a": (ref, image_id)})
        cache, logs = tmp_path / "cache", []
        seeded = _scan(cfg, man, cache, logs)
        assert seeded["status"] == "ok" and seeded["db_updated_at"] not in ("", "2026-11-20T06:00:00Z")

        # a broken bundle is refused with one line and exit 2, and the mirror keeps its DB
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(b"not a bundle")
        res = _invoke(config, "trivy-db", "--import", str(bad))
        assert res.returncode == 2 and res.stderr.strip().count("\n") == 0
        assert "not a gzip-compressed tar archive" in res.stderr

        res = _invoke(config, "trivy-db", "--import", str(_bundle(tmp_path)))
        assert res.returncode == 0, res.stderr
        assert "updated 2026-11-20T06:00:00.000000Z, next update 2026-11-21T06:00:00.000000Z" in res.stdout
        assert f"pushed to {reg.address}/trivy/db:2" in res.stdout
        assert ensure_seeded(cfg, lambda _m: None) == "kept"    # an imported DB is never overwritten by the seed

        # the cached seed DB is still within its NextUpdate: only the changed mirror digest makes Trivy fetch
        imported = _scan(cfg, man, cache, logs)
        # (Trivy rewrites metadata.json on download: the same instants, without fractional seconds)
        assert imported["db_updated_at"] == "2026-11-20T06:00:00Z"
        assert imported["db_next_update"] == "2026-11-21T06:00:00Z"
        assert any("serves another DB" in line for line in logs)
        result = man.stage_result("svc-a", "scan")
        assert result is not None and result["counts"]["MEDIUM"] == 1    # the bundle's advisory, below HIGH
        assert "CVE-2099-4242" in Path(result["report"]).read_text()

        # republishing the seed (`invoke trivy-db --seed`) is one task, and it replaces the import again
        res = _invoke(config, "trivy-db", "--seed")
        assert res.returncode == 0, res.stderr
        assert ensure_seeded(cfg, lambda _m: None) == "current"
        reseeded = _scan(cfg, man, cache, logs)
        assert reseeded["db_updated_at"] not in ("", "2026-11-20T06:00:00Z") and reseeded["status"] == "ok"
