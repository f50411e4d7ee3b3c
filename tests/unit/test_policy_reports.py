"""Policy: parsing real Trivy reports of every class (fixtures copied from real trivy 0.76 outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.gate.policy import Policy, ReportError, evaluate, load_report, parse_report

FIX = Path(__file__).parent / "fixtures" / "trivy"


def test_os_pkgs_report_gives_vulnerabilities_with_versions() -> None:
    rep = load_report(FIX / "os-pkgs.json")
    by_id = {f.id: f for f in rep.findings}
    assert set(by_id) == {"CVE-2099-0001", "CVE-2099-0002"}
    fixed = by_id["CVE-2099-0001"]
    assert (fixed.kind, fixed.klass, fixed.type) == ("vulnerability", "os-pkgs", "debian")
    got = (fixed.package, fixed.installed, fixed.fixed, fixed.severity)
    assert got == ("bash", "5.2.15-2+b13", "5.2.15-3", "HIGH")
    assert by_id["CVE-2099-0002"].fixed == "" and by_id["CVE-2099-0002"].status == "affected"
    assert rep.image_id.startswith("sha256:")


def test_lang_pkgs_report() -> None:
    (f,) = load_report(FIX / "lang-pkgs.json").findings
    got = (f.klass, f.type, f.package, f.installed, f.fixed)
    assert got == ("lang-pkgs", "node-pkg", "lodash", "4.17.20", "4.17.21")
    assert f.path == "app/node_modules/lodash/package.json"


def test_secret_report() -> None:
    findings = load_report(FIX / "secret.json").findings
    assert {f.id for f in findings} == {"aws-access-key-id", "aws-secret-access-key"}
    assert all(f.kind == "secret" and f.severity == "CRITICAL" for f in findings)
    assert {f.target for f in findings} == {"/app/credentials"}
    assert sorted(f.line for f in findings) == [1, 2]


def test_config_report_counts_only_failures() -> None:
    data = json.loads((FIX / "config.json").read_text())
    findings = parse_report(data).findings
    ids = {f.id for f in findings}
    assert {"DS-0002", "DS-0031"} <= ids
    ds31 = next(f for f in findings if f.id == "DS-0031")
    assert (ds31.kind, ds31.severity, ds31.line, ds31.target) == ("misconfig", "CRITICAL", 3, "Dockerfile")
    # a PASS entry (as --include-non-failures writes) is not a finding
    misconfs = data["Results"][0]["Misconfigurations"]
    misconfs.append({**misconfs[0], "Status": "PASS", "ID": "DS-9999"})
    assert "DS-9999" not in {f.id for f in parse_report(data).findings}


def test_report_without_results_is_clean() -> None:
    rep = load_report(FIX / "no-results.json")
    assert rep.findings == () and rep.targets == ()
    v = evaluate(rep.findings, Policy(threshold="LOW"))
    assert v.passed and sum(v.counts.values()) == 0


def test_all_classes_in_one_image_report() -> None:
    rep = load_report(FIX / "image-all-classes.json")
    assert {f.klass for f in rep.findings} == {"os-pkgs", "lang-pkgs", "secret"}


@pytest.mark.parametrize(
    ("content", "msg"),
    [
        ("not json", "not JSON"),
        ('{"SchemaVersion": 1, "Results": []}', "SchemaVersion 1"),
        ("[1, 2]", "not a Trivy JSON report"),
        ('{"SchemaVersion": 2, "Results": {"a": 1}}', "Results is not a list"),
    ],
)
def test_bad_reports_are_usage_errors(tmp_path: Path, content: str, msg: str) -> None:
    p = tmp_path / "r.json"
    p.write_text(content)
    with pytest.raises(ReportError, match=msg) as exc:
        load_report(p)
    assert isinstance(exc.value, UsageError) and exc.value.exit_code == 2


def test_missing_report_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not found"):
        load_report(tmp_path / "nope.json")
