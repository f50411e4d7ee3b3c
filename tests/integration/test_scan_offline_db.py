"""The air-gapped vulnerability DB: a small but real Trivy DB built offline, served by a real registry,
read by a real `trivy image --db-repository`, and the gate blocking (exit 3) — then passing when the
advisory says the package was fixed in an older version."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import PolicyBlocked
from pipeline.local.registry import LocalRegistry
from pipeline.tools import trivy
from tests.integration.scan_fixtures import (
    ImageFactory,
    built_manifest,
    debian_files,
    publish_db,
    run_scan,
    scan_config,
)

pytestmark = [pytest.mark.engine, pytest.mark.registry]

BASH_ADVISORY = {"id": "CVE-2099-4242", "source": "debian 12", "package": "bash", "severity": "HIGH",
                 "title": "bash: offline test advisory"}


def test_real_trivy_reads_the_mirror_and_finds_the_advisory(
        tmp_path: Path, scan_registry: LocalRegistry, scan_image_factory: ImageFactory) -> None:
    ref, image_id = scan_image_factory("debian", debian_files())
    repo = publish_db(scan_registry, "trivy/db-direct", [{**BASH_ADVISORY, "fixed": "5.2.15-3"}], tmp_path / "w")
    data = trivy.scan_image(ref, tmp_path / "r.json", cache_dir=tmp_path / "cache", scanners=("vuln",),
                            db_repository=repo)
    assert data["Metadata"]["ImageID"] == image_id
    assert data["Metadata"]["OS"] == {"Family": "debian", "Name": "12.11"}
    vulns = [v for r in data["Results"] for v in r.get("Vulnerabilities") or []]
    assert [(v["VulnerabilityID"], v["PkgName"], v["InstalledVersion"], v["FixedVersion"]) for v in vulns] == [
        ("CVE-2099-4242", "bash", "5.2.15-2+b13", "5.2.15-3")]
    assert (tmp_path / "cache" / "db" / "trivy.db").is_file()   # Trivy downloaded it from the mirror


def test_gate_blocks_then_passes_when_fixed_in_an_older_version(
        tmp_path: Path, scan_registry: LocalRegistry, scan_image_factory: ImageFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    ref, image_id = scan_image_factory("debian", debian_files())
    vulnerable = publish_db(scan_registry, "trivy/db-vulnerable", [{**BASH_ADVISORY, "fixed": "5.2.15-3"}],
                            tmp_path / "w1")
    fixed_before = publish_db(scan_registry, "trivy/db-fixed-before", [{**BASH_ADVISORY, "fixed": "5.2.15-1"}],
                              tmp_path / "w2")

    # 1) the advisory applies: blocked, exit 3, the table names ID, package, installed → fixed, target
    cfg = scan_config(tmp_path, db_repository=vulnerable, threshold="HIGH")
    man = built_manifest(tmp_path, {"svc-a": (ref, image_id)})
    with pytest.raises(PolicyBlocked) as exc:
        run_scan(None, "test", config=cfg, manifest=man, cache_dir=tmp_path / "cache-1")
    assert exc.value.exit_code == 3
    out = capsys.readouterr().out
    assert "CVE-2099-4242" in out and "5.2.15-2+b13 → 5.2.15-3" in out and "HIGH" in out and "debian 12.11" in out
    res = man.stage_result("svc-a", "scan")
    assert res is not None and res["status"] == "blocked" and res["cached"] is False
    assert res["counts"]["HIGH"] == 1 and res["blocking"][0]["id"] == "CVE-2099-4242"
    assert res["blocking"][0]["installed"] == "5.2.15-2+b13" and res["blocking"][0]["fixed"] == "5.2.15-3"
    report = json.loads(Path(res["report"]).read_text())
    assert report["Metadata"]["ImageID"] == image_id
    sbom = json.loads(Path(res["sbom"]).read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert any(c.get("name") == "bash" and c.get("version") == "5.2.15-2+b13" for c in sbom["components"])
    assert exc.value.record["blocked"] == 1 and exc.value.record["db_version"]
    summary = (man.path.parent / "reports" / "scan-summary.md").read_text()
    assert "CVE-2099-4242" in summary and "blocked" in summary
    sarif = json.loads((man.path.parent / "reports" / "scan.sarif").read_text())
    assert sarif["runs"][0]["results"][0]["ruleId"] == "CVE-2099-4242"
    assert sarif["runs"][0]["results"][0]["level"] == "error"

    # 2) the same image, the advisory says "fixed in 5.2.15-1" (older than installed): pass
    cfg2 = scan_config(tmp_path, db_repository=fixed_before, threshold="HIGH")
    results = run_scan(None, "test", config=cfg2, manifest=man, cache_dir=tmp_path / "cache-2")
    assert results["svc-a"]["status"] == "pass" and results["svc-a"]["counts"]["HIGH"] == 0
    assert results["svc-a"]["image_id"] == image_id


def test_unchanged_image_and_db_are_not_rescanned(
        tmp_path: Path, scan_registry: LocalRegistry, scan_image_factory: ImageFactory) -> None:
    ref, image_id = scan_image_factory("debian", debian_files())
    repo = publish_db(scan_registry, "trivy/db-cache", [{**BASH_ADVISORY, "fixed": "5.2.15-3"}], tmp_path / "w")
    cfg = scan_config(tmp_path, db_repository=repo, threshold="CRITICAL")   # HIGH does not block here
    man = built_manifest(tmp_path, {"svc-a": (ref, image_id)})
    lines: list[str] = []
    first = run_scan(None, "test", config=cfg, manifest=man, cache_dir=tmp_path / "cache", log=lines.append)
    assert first["svc-a"]["status"] == "pass" and first["svc-a"]["cached"] is False
    second = run_scan(None, "test", config=cfg, manifest=man, cache_dir=tmp_path / "cache", log=lines.append)
    assert second["svc-a"]["cached"] is True and second["svc-a"]["counts"]["HIGH"] == 1
    assert any("not rescanned" in line for line in lines)
    # the policy is re-applied to the cached report: a stricter environment blocks without a rescan
    strict = scan_config(tmp_path, db_repository=repo, threshold="HIGH")
    with pytest.raises(PolicyBlocked):
        run_scan(None, "test", config=strict, manifest=man, cache_dir=tmp_path / "cache", log=lines.append)
    res = man.stage_result("svc-a", "scan")
    assert res is not None and res["cached"] is True and res["status"] == "blocked"


def test_unreachable_mirror_falls_back_to_the_cached_db(
        tmp_path: Path, scan_registry: LocalRegistry, scan_image_factory: ImageFactory) -> None:
    ref, image_id = scan_image_factory("debian", debian_files())
    repo = publish_db(scan_registry, "trivy/db-offline", [{**BASH_ADVISORY, "fixed": "5.2.15-3"}], tmp_path / "w")
    trivy.download_db(repo, tmp_path / "cache")
    meta_file = tmp_path / "cache" / "db" / "metadata.json"   # make the cached DB due for an update
    meta = json.loads(meta_file.read_text())
    past = "2000-01-01T00:00:00Z"   # Trivy refetches only past NextUpdate and an hour after DownloadedAt
    meta_file.write_text(json.dumps({**meta, "NextUpdate": past, "DownloadedAt": past}))
    cfg = scan_config(tmp_path, db_repository="127.0.0.1:5249/nothing/here", threshold="HIGH")
    man = built_manifest(tmp_path, {"svc-a": (ref, image_id)})
    lines: list[str] = []
    with pytest.raises(PolicyBlocked):
        run_scan(None, "test", config=cfg, manifest=man, cache_dir=tmp_path / "cache", log=lines.append)
    assert any("scanning offline with the cached DB" in line for line in lines)


def test_scan_gate_cli_exit_codes(tmp_path: Path, scan_registry: LocalRegistry,
                                  scan_image_factory: ImageFactory, root: Path) -> None:
    ref, _ = scan_image_factory("debian", debian_files())
    repo = publish_db(scan_registry, "trivy/db-cli", [{**BASH_ADVISORY, "fixed": "5.2.15-3"}], tmp_path / "w")
    trivy.scan_image(ref, tmp_path / "r.json", cache_dir=tmp_path / "c", scanners=("vuln",), db_repository=repo)

    def gate(*args: str) -> Any:
        return subprocess.run([sys.executable, "-m", "invoke", "scan-gate", "--report", str(tmp_path / "r.json"),
                               *args], cwd=root, capture_output=True, text=True, timeout=120, check=False)

    blocked = gate("--fail-on", "HIGH", "--sarif", str(tmp_path / "g.sarif"), "--summary", str(tmp_path / "g.md"))
    assert blocked.returncode == 3, blocked.stderr
    assert "CVE-2099-4242" in blocked.stdout and "blocked" in blocked.stderr
    assert json.loads((tmp_path / "g.sarif").read_text())["version"] == "2.1.0"
    assert "CVE-2099-4242" in (tmp_path / "g.md").read_text()
    passed = gate("--fail-on", "CRITICAL")
    assert passed.returncode == 0, passed.stderr
    bad = gate("--fail-on", "SEVERE")
    assert bad.returncode == 2 and "unknown severity" in bad.stderr


def test_debootstrap_base_image_with_real_debian_packages(tmp_path: Path, scan_registry: LocalRegistry) -> None:
    """The project's own debootstrap base (veza-local/debian:bookworm): real dpkg database, real versions."""
    from pipeline.tools import docker

    ref = "veza-local/debian:bookworm"
    if docker.image_id(ref) is None:
        from pipeline.local.bases import ensure_bases

        ensure_bases(try_pull=False)
    glibc = {"id": "CVE-2099-4343", "source": "debian 12", "package": "glibc", "severity": "CRITICAL"}
    vulnerable = publish_db(scan_registry, "trivy/db-base-vuln",
                            [{**BASH_ADVISORY, "fixed": "5.2.15-3"}, {**glibc, "fixed": "2.36-9+deb12u999"}],
                            tmp_path / "w1")
    fixed_before = publish_db(scan_registry, "trivy/db-base-fixed",
                              [{**BASH_ADVISORY, "fixed": "5.2.15-1"}, {**glibc, "fixed": "2.36-9"}],
                              tmp_path / "w2")
    data = trivy.scan_image(ref, tmp_path / "r.json", cache_dir=tmp_path / "c1", scanners=("vuln",),
                            db_repository=vulnerable)
    pkgs = {p["Name"]: p for r in data["Results"] for p in r.get("Packages") or []}
    assert len(pkgs) > 50 and pkgs["libc6"]["SrcName"] == "glibc"   # the real dpkg database was read
    found = {(v["VulnerabilityID"], v["PkgName"]) for r in data["Results"] for v in r.get("Vulnerabilities") or []}
    assert ("CVE-2099-4242", "bash") in found and ("CVE-2099-4343", "libc6") in found
    with pytest.raises(PolicyBlocked):
        from pipeline.stages.scan import run_scan_gate

        run_scan_gate(str(tmp_path / "r.json"), fail_on="CRITICAL")
    clean = trivy.scan_image(ref, tmp_path / "r2.json", cache_dir=tmp_path / "c2", scanners=("vuln",),
                             db_repository=fixed_before)
    assert not [v for r in clean["Results"] for v in r.get("Vulnerabilities") or []]


def test_private_mirror_with_credentials(tmp_path: Path, scan_image_factory: ImageFactory,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A mirror behind htpasswd auth: credentials from the [registry] env vars reach Trivy via its env."""
    from pipeline.core.errors import RegistryAuthError, StageFailed
    from pipeline.local import trivydb
    from pipeline.local.registry import write_htpasswd
    from tests.integration.scan_fixtures import free_port

    ref, image_id = scan_image_factory("debian", debian_files())
    user, password = "scanner", "s3cret-" + image_id[-8:]
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {user: password})
    with LocalRegistry(free_port(), root=tmp_path / "reg", htpasswd=htpasswd) as reg:
        db_dir = trivydb.build_db(trivydb.parse_advisories([{**BASH_ADVISORY, "fixed": "5.2.15-3"}]), tmp_path / "db")
        archive = trivydb.package_db(db_dir, tmp_path / "db.tar.gz")
        with pytest.raises(RegistryAuthError):
            trivydb.push_db(archive, f"{reg.address}/trivy/db")            # anonymous push refused, at once
        trivydb.push_db(archive, f"{reg.address}/trivy/db", username=user, password=password)
        cfg = scan_config(tmp_path, db_repository=f"{reg.address}/trivy/db", threshold="HIGH")
        man = built_manifest(tmp_path, {"svc-a": (ref, image_id)})
        monkeypatch.delenv("VEZA_REGISTRY_USERNAME", raising=False)
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
        with pytest.raises(StageFailed, match="cannot fetch the Trivy DB"):
            run_scan(None, "test", config=cfg, manifest=man, cache_dir=tmp_path / "cache")   # no credentials
        cfg = replace(cfg, registry=replace(cfg.registry, username_env="SCAN_T_USER", password_env="SCAN_T_PW"))
        monkeypatch.setenv("SCAN_T_USER", user)
        monkeypatch.setenv("SCAN_T_PW", password)
        with pytest.raises(PolicyBlocked):
            run_scan(None, "test", config=cfg, manifest=man, cache_dir=tmp_path / "cache")
        assert password not in man.path.read_text()
