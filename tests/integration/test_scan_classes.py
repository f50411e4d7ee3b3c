"""Real Trivy reports of every class through the scan stage and the scan gate: a clean image passes, a
planted secret blocks, a Go binary and lockfiles (lang-pkgs), a Dockerfile misconfiguration (config),
a report with no Results; and the ignore file's reason/expiry rules on real reports."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from pipeline.core.errors import PolicyBlocked
from pipeline.gate.policy import load_report
from pipeline.stages.scan import run_scan_gate
from pipeline.tools import golang, trivy
from tests.integration.scan_fixtures import (
    DbMirror,
    ImageFactory,
    built_manifest,
    debian_files,
    fake_aws_credentials,
    run_scan,
    scan_config,
)

pytestmark = [pytest.mark.engine, pytest.mark.registry]

HELLO_GO = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello") }\n'


def test_clean_image_passes_and_planted_secret_is_blocked(
        tmp_path: Path, db_mirror: DbMirror, scan_image_factory: ImageFactory) -> None:
    clean = scan_image_factory("clean", {**debian_files("5.2.15-3", "bash"), "app/README": b"hello\n"})
    leaky = scan_image_factory("leaky", {**debian_files("5.2.15-3", "bash"),
                                         "app/credentials": fake_aws_credentials()})
    cfg = scan_config(tmp_path, db_repository=db_mirror.repository, threshold="CRITICAL")
    man = built_manifest(tmp_path, {"svc-clean": clean, "svc-leaky": leaky})
    with pytest.raises(PolicyBlocked) as exc:
        run_scan(None, "test", config=cfg, manifest=man, cache_dir=db_mirror.cache_dir)
    assert "svc-leaky" in exc.value.message and "svc-clean" not in exc.value.message
    ok, bad = man.stage_result("svc-clean", "scan"), man.stage_result("svc-leaky", "scan")
    assert ok is not None and ok["status"] == "pass" and ok["blocking_count"] == 0
    assert ok["counts"]["CRITICAL"] == ok["counts"]["HIGH"] == ok["counts"]["MEDIUM"] == 0
    assert bad is not None and bad["status"] == "blocked"
    assert {f["id"] for f in bad["blocking"]} == {"aws-access-key-id", "aws-secret-access-key"}
    assert all(f["target"] == "/app/credentials" and f["kind"] == "secret" for f in bad["blocking"])
    # the scan gate reaches the same verdict on the saved real report (class "secret")
    with pytest.raises(PolicyBlocked, match="2 finding"):
        run_scan_gate(bad["report"], fail_on="CRITICAL")
    assert run_scan_gate(ok["report"], fail_on="CRITICAL").passed
    # the secret itself never reaches the report or the manifest (Trivy masks it)
    secret_tail = "hT5vJ0aLcE6sK9oP4iB7"
    assert secret_tail not in Path(bad["report"]).read_text() and secret_tail not in man.path.read_text()


def test_go_binary_lang_pkgs_report(tmp_path: Path, db_mirror: DbMirror, scan_image_factory: ImageFactory) -> None:
    src = tmp_path / "hello.go"
    src.write_text(HELLO_GO)
    exe = golang.build_gopath(src, tmp_path / "hello")
    ref, _ = scan_image_factory("gobin", {"app/hello": exe.read_bytes()}, modes={"app/hello": 0o755})
    trivy.scan_image(ref, tmp_path / "r.json", cache_dir=db_mirror.cache_dir, scanners=("vuln",))
    rep = load_report(tmp_path / "r.json")
    (f,) = rep.findings
    assert (f.klass, f.type, f.package, f.id, f.fixed) == ("lang-pkgs", "gobinary", "stdlib", "GO-2099-0001",
                                                         "1.19.99")
    with pytest.raises(PolicyBlocked):
        run_scan_gate(str(tmp_path / "r.json"), fail_on="HIGH")
    assert run_scan_gate(str(tmp_path / "r.json"), fail_on="CRITICAL").passed


def test_lockfiles_lang_pkgs_report(tmp_path: Path, db_mirror: DbMirror) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "requirements.txt").write_text("requests==2.19.0\n")
    (proj / "package-lock.json").write_text(json.dumps({
        "name": "x", "lockfileVersion": 3,
        "packages": {"": {"name": "x"}, "node_modules/minimist": {"version": "1.2.5"}}}))
    trivy.scan_fs(proj, tmp_path / "r.json", cache_dir=db_mirror.cache_dir, scanners=("vuln",))
    rep = load_report(tmp_path / "r.json")
    got = {(f.klass, f.type, f.package, f.installed, f.id) for f in rep.findings}
    assert got == {("lang-pkgs", "pip", "requests", "2.19.0", "GHSA-test-pip0-0001"),
                   ("lang-pkgs", "npm", "minimist", "1.2.5", "GHSA-test-npm0-0001")}
    with pytest.raises(PolicyBlocked, match="2 finding"):
        run_scan_gate(str(tmp_path / "r.json"), fail_on="HIGH")


def test_dockerfile_misconfig_config_report(tmp_path: Path, db_mirror: DbMirror) -> None:
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    good.mkdir()
    (bad / "Dockerfile").write_text("FROM debian:bookworm\nRUN apt-get update && apt-get install -y curl\n"
                                    'CMD ["curl"]\n')
    (good / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y "
                                     "--no-install-recommends curl && rm -rf /var/lib/apt/lists/*\nUSER 10001\n"
                                     'HEALTHCHECK CMD ["curl", "-f", "http://127.0.0.1/"]\nCMD ["curl"]\n')
    trivy.scan_config(bad, tmp_path / "bad.json", cache_dir=db_mirror.cache_dir)
    trivy.scan_config(good, tmp_path / "good.json", cache_dir=db_mirror.cache_dir)
    findings = load_report(tmp_path / "bad.json").findings
    assert {"DS-0002", "DS-0029"} <= {f.id for f in findings}
    assert all(f.kind == "misconfig" and f.klass == "config" for f in findings)
    with pytest.raises(PolicyBlocked):
        run_scan_gate(str(tmp_path / "bad.json"), fail_on="HIGH")
    assert run_scan_gate(str(tmp_path / "good.json"), fail_on="HIGH").passed


def test_report_with_no_results_passes(tmp_path: Path, db_mirror: DbMirror) -> None:
    (tmp_path / "empty").mkdir()
    data = trivy.scan_config(tmp_path / "empty", tmp_path / "r.json", cache_dir=db_mirror.cache_dir)
    assert "Results" not in data
    v = run_scan_gate(str(tmp_path / "r.json"), fail_on="LOW")
    assert v.passed and v.findings == ()


def test_ignore_file_reason_and_expiry_on_a_real_report(
        tmp_path: Path, db_mirror: DbMirror, scan_image_factory: ImageFactory) -> None:
    ref, image_id = scan_image_factory("debian", debian_files())
    today = date.today()

    def ignore(**entry: object) -> str:
        body = "\n".join(f"    {k}: {v}" for k, v in entry.items())
        (tmp_path / ".trivyignore.yaml").write_text(f"ignores:\n  - id: CVE-2099-0001\n{body}\n")
        return str(tmp_path / ".trivyignore.yaml")

    cfg = scan_config(tmp_path, db_repository=db_mirror.repository, threshold="HIGH")
    man = built_manifest(tmp_path, {"svc-a": (ref, image_id)})
    valid = ignore(reason="'bash is not run by the service'", expires=(today + timedelta(days=30)).isoformat())
    res = run_scan(None, "test", config=cfg, manifest=man, cache_dir=db_mirror.cache_dir)["svc-a"]
    assert res["status"] == "pass" and res["ignored_count"] == 1
    report = res["report"]
    assert run_scan_gate(report, fail_on="HIGH", ignore_file=valid).passed

    expired = ignore(reason="'was fine last year'", expires=(today - timedelta(days=1)).isoformat())
    with pytest.raises(PolicyBlocked):
        run_scan_gate(report, fail_on="CRITICAL", ignore_file=expired)   # the stale entry blocks on its own
    with pytest.raises(PolicyBlocked):
        run_scan(None, "test", config=cfg, manifest=man, cache_dir=db_mirror.cache_dir)
    blocked = man.stage_result("svc-a", "scan")
    assert blocked is not None and blocked["cached"] is True
    assert {f["id"] for f in blocked["blocking"]} == {"IGNORE-EXPIRED", "CVE-2099-0001"}

    reasonless = ignore(expires=(today + timedelta(days=30)).isoformat())
    with pytest.raises(PolicyBlocked) as exc:
        run_scan_gate(report, fail_on="HIGH", ignore_file=reasonless)
    assert "2 finding" in exc.value.message   # the CVE (not ignored) + the reason-less entry
