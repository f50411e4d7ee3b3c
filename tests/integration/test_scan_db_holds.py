"""A recorded scan holds only while the DB mirror serves the DB it was made with: a DB imported (or republished)
into the mirror after the scan makes the scan stage run again, and the new scan judges with the new DB.
Before, holds() compared only the cached DB, which is still the old one until a scan fetches, so a resumed
release kept the verdicts of the older DB. Real registry (127.0.0.1:19150-19199), real Trivy, the offline DB
writer."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.contract.context import RunContext
from pipeline.core.errors import PolicyBlocked
from pipeline.core.reporter import PlainReporter
from pipeline.local.registry import LocalRegistry
from pipeline.stages.scan import ScanStage, scan_images
from pipeline.tools import trivy
from tests.integration.scan_fixtures import ImageFactory, built_manifest, debian_files, publish_db, scan_config
from tests.ports import PortPool
from tests.unit.test_runner import info

pytestmark = [pytest.mark.engine, pytest.mark.registry]
free_port = PortPool(range(19150, 19200)).take
QUIET = PlainReporter(sink=lambda _line: None)


def _advisory(severity: str, vid: str) -> list[dict[str, str]]:
    return [{"id": vid, "source": "debian 12", "package": "bash", "fixed": "5.2.15-3", "severity": severity,
             "title": f"bash: test advisory {vid}"}]


def test_a_db_imported_after_the_scan_makes_the_recorded_scan_stale(tmp_path: Path, scan_image_factory: ImageFactory,
                                                                    request: pytest.FixtureRequest) -> None:
    ref, image_id = scan_image_factory("holds", debian_files())
    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        path = f"trivy/db-{uuid.uuid4().hex[:8]}"
        repo = publish_db(reg, path, _advisory("HIGH", "CVE-2099-1001"), tmp_path / "a")
        cfg = scan_config(tmp_path, db_repository=repo, threshold="CRITICAL", registry=reg.address)
        cfg = replace(cfg, scan=replace(cfg.scan, scanners=("vuln",)))
        man = built_manifest(tmp_path, {"svc-a": (ref, image_id)})
        cache = trivy.default_cache_dir(repo)   # the scan stage's own cache (what holds() falls back to)
        request.addfinalizer(lambda: shutil.rmtree(cache, ignore_errors=True))
        summary = scan_images(cfg, cfg.env("test"), man, QUIET, None, cache_dir=cache)
        assert summary.fields["pass"] == 1
        man.record_stage("scan", {"status": "ok", "services": ["svc-a"], **summary.fields})
        ctx = RunContext(cfg=cfg, env=cfg.env("test"), info=info(), manifest=man, run_id="t", run_dir=tmp_path,
                         reporter=QUIET, services=["svc-a"])
        assert ScanStage().holds(ctx) is None     # same images, same policy, the mirror still serves that DB

        publish_db(reg, path, _advisory("CRITICAL", "CVE-2099-1002"), tmp_path / "b")   # imported later
        why = ScanStage().holds(ctx)
        assert why is not None and f"the DB mirror {repo} serves another DB" in why, why
        with pytest.raises(PolicyBlocked, match="blocked: svc-a"):   # the rescan judges with the new DB
            scan_images(cfg, cfg.env("test"), man, QUIET, None, cache_dir=cache)
        assert str(summary.fields.get("db_mirror")).startswith("sha256:")   # what holds() compares with
        assert "CVE-2099-1002" in Path(str((man.stage_result("svc-a", "scan") or {})["report"])).read_text()
