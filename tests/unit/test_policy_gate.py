"""Policy: threshold, ignore-unfixed, and the ignore file's reason/expiry rules."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.gate.policy import (
    Finding,
    IgnoreFileError,
    Policy,
    evaluate,
    load_ignore_file,
    load_report,
    parse_ignore_file,
    severity,
)

FIX = Path(__file__).parent / "fixtures" / "trivy"
TODAY = date(2026, 6, 1)


def os_findings() -> tuple[Finding, ...]:
    # CVE-2099-0001: HIGH, fixed in 5.2.15-3; CVE-2099-0002: CRITICAL, no fix
    return load_report(FIX / "os-pkgs.json").findings


def test_threshold_blocks_at_and_above() -> None:
    high = evaluate(os_findings(), Policy(threshold="HIGH"), TODAY)
    assert high.status == "blocked" and {f.id for f in high.blocking} == {"CVE-2099-0001", "CVE-2099-0002"}
    crit = evaluate(os_findings(), Policy(threshold="CRITICAL"), TODAY)
    assert [f.id for f in crit.blocking] == ["CVE-2099-0002"]
    assert crit.counts["HIGH"] == 1 and crit.counts["CRITICAL"] == 1
    assert crit.blocking[0].severity == "CRITICAL"


def test_ignore_unfixed_drops_only_vulnerabilities_without_fix() -> None:
    v = evaluate(os_findings(), Policy(threshold="CRITICAL", ignore_unfixed=True), TODAY)
    assert v.passed and v.unfixed_skipped == 1 and v.counts["HIGH"] == 1
    secrets = load_report(FIX / "secret.json").findings
    assert evaluate(secrets, Policy(threshold="CRITICAL", ignore_unfixed=True), TODAY).status == "blocked"


def test_severity_names() -> None:
    assert severity("high") == "HIGH"
    with pytest.raises(UsageError):
        severity("SEVERE")
    with pytest.raises(UsageError):
        evaluate([], Policy(threshold="bogus"))


VALID = """
ignores:
  - id: CVE-2099-0001
    reason: bash is never executed by the service
    expires: 2026-12-31
"""


def test_valid_entry_ignores_and_is_reported() -> None:
    v = evaluate(os_findings(), Policy("HIGH", False, parse_ignore_file(VALID)), TODAY)
    assert [f.id for f in v.blocking] == ["CVE-2099-0002"]
    assert [(f.id, r) for f, r in v.ignored] == [("CVE-2099-0001", "bash is never executed by the service")]


def test_expired_entry_ignores_nothing_and_is_a_finding() -> None:
    ign = parse_ignore_file(VALID.replace("2026-12-31", "2026-05-31"), "ign.yaml")
    v = evaluate(os_findings(), Policy("CRITICAL", True, ign), TODAY)
    ids = [f.id for f in v.blocking]
    assert ids == ["IGNORE-EXPIRED"]       # the HIGH CVE is below CRITICAL: the stale entry alone blocks
    f = v.blocking[0]
    assert f.kind == "ignore-file" and f.line == 3 and "CVE-2099-0001" in f.title and "2026-05-31" in f.title
    # Trivy's expired_at: a bare date expires at 00:00 UTC that day (ExpiredAt.Before(now)), so the day
    # before still applies and the day itself does not
    assert evaluate(os_findings(), Policy("CRITICAL", True, parse_ignore_file(
        VALID.replace("2026-12-31", "2026-06-02"))), TODAY).passed
    assert not evaluate(os_findings(), Policy("CRITICAL", True, parse_ignore_file(
        VALID.replace("2026-12-31", "2026-06-01"))), TODAY).passed


def test_reasonless_and_undated_entries_are_findings() -> None:
    text = """
- id: CVE-2099-0001
  expires: 2027-01-01
- id: CVE-2099-0002
  reason: "   "
  expires: 2027-01-01
- id: DS-0002
  reason: accepted
"""
    v = evaluate([], Policy("CRITICAL", False, parse_ignore_file(text)), TODAY)
    assert sorted(f.id for f in v.blocking) == ["IGNORE-NO-EXPIRY", "IGNORE-NO-REASON", "IGNORE-NO-REASON"]
    v2 = evaluate(os_findings(), Policy("HIGH", False, parse_ignore_file(text)), TODAY)
    assert {"CVE-2099-0001", "CVE-2099-0002"} <= {f.id for f in v2.blocking}  # nothing was ignored


def test_package_and_path_scoping() -> None:
    text = """
ignores:
  - {id: CVE-2099-0001, reason: r, expires: 2027-01-01, packages: [openssl]}
  - {id: GHSA-xxxx-0001, reason: r, expires: 2027-01-01, paths: ["app/node_modules/**"]}
"""
    findings = load_report(FIX / "image-all-classes.json").findings
    v = evaluate(findings, Policy("LOW", False, parse_ignore_file(text)), TODAY)
    assert [f.id for f, _ in v.ignored] == ["GHSA-xxxx-0001"]
    assert "CVE-2099-0001" in {f.id for f in v.blocking}
    assert v.unused_ignores == ("CVE-2099-0001",)


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("ignores: [{reason: x, expires: 2027-01-01}]", "missing 'id'"),
        ("ignores: [{id: X, reason: x, expires: tomorrow}]", "not a date"),
        ("ignores: [{id: X, reason: x, expires: 2027-01-01, colour: red}]", "unknown key"),
        ("ignores: {id: X}", "expected a list"),
        ("other: []", "unknown top-level"),
        ("ignores: [\n  - {id: X", "invalid YAML"),
        ("ignores: [{id: X, reason: x, expires: 2027-01-01, packages: 3}]", "packages must be"),
    ],
)
def test_malformed_ignore_files_are_usage_errors(text: str, msg: str) -> None:
    with pytest.raises(IgnoreFileError, match=msg):
        parse_ignore_file(text)


def test_empty_and_missing_ignore_file(tmp_path: Path) -> None:
    assert parse_ignore_file("").entries == ()
    assert parse_ignore_file("ignores:\n").entries == ()
    with pytest.raises(IgnoreFileError, match="not found"):
        load_ignore_file(tmp_path / "absent.yaml")


def test_verdict_dict_for_the_manifest() -> None:
    d = evaluate(os_findings(), Policy("HIGH"), TODAY).to_dict(limit=1)
    assert d["status"] == "blocked" and d["blocking_count"] == 2 and len(d["blocking"]) == 1
    assert d["blocking"][0]["id"] == "CVE-2099-0002"   # most severe first
    assert d["counts"] == {"CRITICAL": 1, "HIGH": 1, "MEDIUM": 0, "LOW": 0, "UNKNOWN": 0}


def test_report_cache_pruning_keeps_the_most_recent(tmp_path: Path) -> None:
    import os

    from pipeline.stages.scan import prune_report_cache

    for i in range(5):
        (tmp_path / f"e{i}").mkdir()
        os.utime(tmp_path / f"e{i}", (1000 + i, 1000 + i))
    assert prune_report_cache(tmp_path, keep=3) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e2", "e3", "e4"]
    assert prune_report_cache(tmp_path / "absent") == 0
