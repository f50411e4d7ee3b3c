"""The OpenVEX document the pipeline makes from the ignore file is read by the real Trivy (`--vex`): scanning
the pushed image by digest, the justified vulnerability is reported as not affected; the same statement about
another digest changes nothing. Offline: a DB built here, served by a real registry."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from pipeline.gate.policy import IgnoreEntry
from pipeline.tools import trivy
from pipeline.trust.vex import openvex_document
from tests.integration.scan_fixtures import ImageFactory, debian_files, publish_db

ADVISORY = {"id": "CVE-2099-4343", "source": "debian 12", "package": "bash", "severity": "HIGH",
            "title": "bash: VEX test advisory", "fixed": "5.2.15-3"}


def _vulns(ref: str, cache: Path, vex: Path, out: Path) -> list[str]:
    argv = [trivy.binary(), "image", "--cache-dir", str(cache), "--skip-db-update", "--skip-version-check",
            "--disable-telemetry", "--image-src", "remote", "--insecure", "--scanners", "vuln", "--format", "json",
            "--output", str(out), "--quiet", "--vex", str(vex), ref]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    return [v["VulnerabilityID"] for r in data.get("Results") or [] for v in r.get("Vulnerabilities") or []]


@pytest.mark.engine
@pytest.mark.registry
def test_trivy_honours_the_pipeline_openvex_for_the_pushed_digest(
        tmp_path: Path, scan_registry: Any, scan_image_factory: ImageFactory, docker_client: Any) -> None:
    ref, _ = scan_image_factory("debian", debian_files())
    db = publish_db(scan_registry, "trivy/db-vex", [ADVISORY], tmp_path / "w")
    cache = tmp_path / "cache"
    trivy.download_db(db, cache)
    target = f"{scan_registry.address}/vex/debian"
    docker_client.api.tag(ref, target, "v1")
    digest = ""
    try:
        for line in docker_client.api.push(target, "v1", stream=True, decode=True):
            digest = (line.get("aux") or {}).get("Digest", digest)
        assert digest.startswith("sha256:")
        entry = IgnoreEntry("CVE-2099-4343", "bash is never run by the service", date(2099, 1, 1))
        for name, about, expected in (("ours", digest, []), ("other", "sha256:" + "0" * 64, ["CVE-2099-4343"])):
            vex = tmp_path / f"{name}.openvex.json"
            vex.write_text(json.dumps(openvex_document([entry], [(target, about)], author="test",
                                                       timestamp="2026-11-29T00:00:00Z")))
            assert _vulns(f"{target}@{digest}", cache, vex, tmp_path / f"{name}.json") == expected
    finally:
        docker_client.api.remove_image(f"{target}:v1")
