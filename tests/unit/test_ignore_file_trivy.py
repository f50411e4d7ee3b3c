"""Issue 16, scan policy: the ignore file means what Trivy's `.trivyignore.yaml` means, field by field.

Sources: Trivy pkg/result/ignore.go (Match, matchPath with doublestar, matchPURL, Prune on ExpiredAt),
pkg/result/filter.go (what each class is matched on) and pkg/purl (PackageURL.Match). The alias and glob
cases were also checked against the real trivy 0.76 (tests/integration/test_ignore_file_vs_trivy.py).
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from pipeline.core.paths import ROOT
from pipeline.gate.ignorefile import IgnoreFileError, check_key, parse_ignore_file, path_matches
from pipeline.gate.policy import Finding, Policy, evaluate, load_report

FIX = Path(__file__).parent / "fixtures" / "trivy"
TODAY = date(2026, 6, 1)


def gate(findings: list[Finding] | tuple[Finding, ...], text: str, today: date | datetime = TODAY,
         threshold: str = "LOW"):
    return evaluate(findings, Policy(threshold, False, parse_ignore_file(text, "ign.yaml")), today)


def misconf(ident: str, avdid: str = "", target: str = "Dockerfile") -> Finding:
    return Finding(kind="misconfig", id=ident, severity="HIGH", target=target, path=target,
                   aliases=(avdid,) if avdid else ())


# ------------------------------------------------------------------ case 4: ids and aliases

@pytest.mark.parametrize("entry", ["AVD-DS-0002", "DS002", "DS-0002"])
@pytest.mark.parametrize("finding", [misconf("DS002", "AVD-DS-0002"), misconf("DS-0002")],
                         ids=["trivy<0.60 ID+AVDID", "trivy 0.76 ID"])
def test_a_check_is_matched_by_any_of_its_ids(entry: str, finding: Finding) -> None:
    text = f"misconfigurations:\n  - id: {entry}\n    statement: root is needed here\n    expired_at: 2027-01-01\n"
    v = gate([finding], text)
    assert v.passed and len(v.ignored) == 1 and v.unused_ignores == ()


def test_check_ids_are_case_sensitive_and_other_checks_do_not_match() -> None:
    text = ("misconfigurations:\n  - {id: ds-0002, statement: x, expired_at: 2027-01-01}\n"
            "  - {id: AVD-DS-0026, statement: x, expired_at: 2027-01-01}\n")
    v = gate([misconf("DS-0002")], text)
    assert not v.passed and v.unused_ignores == ("ds-0002", "AVD-DS-0026")
    assert check_key("AVD-KSV-0001") == check_key("KSV001") == check_key("KSV-0001") == "KSV-1"


def test_report_aliases_are_read_from_trivy_json() -> None:
    data = {"SchemaVersion": 2, "Results": [{"Target": "Dockerfile", "Class": "config", "Misconfigurations": [
        {"ID": "DS002", "AVDID": "AVD-DS-0002", "Status": "FAIL", "Severity": "HIGH"}]}]}
    from pipeline.gate.policy import parse_report

    f = parse_report(data).findings[0]
    assert f.id == "DS002" and f.aliases == ("AVD-DS-0002",)


def test_vulnerability_ids_are_exact_and_unused_entries_are_listed() -> None:
    findings = load_report(FIX / "os-pkgs.json").findings
    text = ("vulnerabilities:\n  - {id: cve-2099-0001, statement: x, expired_at: 2027-01-01}\n"
            "  - {id: CVE-2099-0002, statement: x, expired_at: 2027-01-01}\n")
    v = gate(findings, text)
    assert [f.id for f, _ in v.ignored] == ["CVE-2099-0002"] and v.unused_ignores == ("cve-2099-0001",)


def test_a_section_applies_to_its_class_only() -> None:
    secrets = load_report(FIX / "secret.json").findings
    rule = secrets[0].id
    as_vuln = f"vulnerabilities:\n  - {{id: {rule}, statement: x, expired_at: 2027-01-01}}\n"
    as_secret = f"secrets:\n  - {{id: {rule}, statement: x, expired_at: 2027-01-01}}\n"
    assert not gate(secrets[:1], as_vuln).ignored
    assert gate(secrets[:1], as_secret).ignored


# ------------------------------------------------------------------ case 5: impossible dates

@pytest.mark.parametrize(("value", "key"), [("2026-02-30", "expires"), ("2026-13-01", "expires"),
                                            ("2026-02-30", "expired_at"), ("2026-02-29", "expires")])
def test_impossible_dates_are_one_line_errors(value: str, key: str) -> None:
    text = f"ignores:\n  - id: CVE-2024-0001\n    reason: accepted\n    {key}: {value}\n"
    with pytest.raises(IgnoreFileError) as exc:
        parse_ignore_file(text, "ign.yaml")
    assert exc.value.exit_code == 2
    assert exc.value.one_line() == (f"ign.yaml: entry 1 (line 4): {key} '{value}' is not a date "
                                    "(fix: write a real calendar date as YYYY-MM-DD, e.g. 2026-02-28)")


def test_explicit_timestamp_tag_and_quoted_dates() -> None:
    with pytest.raises(IgnoreFileError, match="expires '2026-02-30' is not a date"):
        parse_ignore_file("- {id: X, reason: r, expires: !!timestamp 2026-02-30}")
    e = parse_ignore_file("- {id: X, reason: r, expires: '2026-02-28'}").entries[0]
    assert e.expires == datetime(2026, 2, 28, tzinfo=UTC)


@pytest.mark.parametrize("task", ["scan-gate"])
def test_scan_gate_task_exits_2_with_one_line(tmp_path: Path, task: str) -> None:
    ign = tmp_path / "ign.yaml"
    ign.write_text("ignores:\n  - id: CVE-2099-0001\n    reason: accepted\n    expires: 2026-02-30\n")
    res = subprocess.run([str(ROOT / ".venv" / "bin" / "invoke"), task, "--report", str(FIX / "os-pkgs.json"),
                          "--ignore-file", str(ign)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert f"{ign}: entry 1 (line 4): expires '2026-02-30' is not a date (fix: " in res.stderr + res.stdout


# ------------------------------------------------------------------ case 6: every field, Trivy's meaning

def test_expired_at_is_an_instant_a_bare_date_expires_at_its_midnight_utc() -> None:
    f = load_report(FIX / "os-pkgs.json").findings
    entry = "vulnerabilities:\n  - {{id: CVE-2099-0001, statement: x, expired_at: {}}}\n"
    assert gate(f, entry.format("2026-06-02"), TODAY).ignored                  # the day before: applies
    on_day = gate(f, entry.format("2026-06-01"), TODAY)                        # the day itself: expired
    assert not on_day.ignored and "IGNORE-EXPIRED" in {x.id for x in on_day.blocking}
    noon = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert gate(f, entry.format("2026-06-01T18:00:00Z"), noon).ignored         # a time of day counts
    assert not gate(f, entry.format("2026-06-01T11:00:00+00:00"), noon).ignored


def test_statement_and_reason_are_the_same_field() -> None:
    f = load_report(FIX / "os-pkgs.json").findings
    v = gate(f, "vulnerabilities:\n  - {id: CVE-2099-0001, statement: not reachable, expired_at: 2027-01-01}\n")
    assert [r for _, r in v.ignored] == ["not reachable"]
    with pytest.raises(IgnoreFileError, match="both 'statement' and 'reason'"):
        parse_ignore_file("- {id: X, statement: a, reason: b, expires: 2027-01-01}")


@pytest.mark.parametrize(("path", "pattern", "expected"), [
    ("Dockerfile", "**/Dockerfile", True), ("Dockerfile", "*/Dockerfile", False),
    ("usr/lib/x/y", "usr/*", False), ("usr/lib/x/y", "usr/**", True), ("Dockerfile", "Dockerfile/**", True),
    ("a/b.json", "a/{b,c}.json", True), ("a/.env", "a/*", True), ("Dockerfile", "[D]ockerfile", True),
    ("/app/credentials", "app/*", False), ("/app/credentials", "/app/*", True), ("Dockerfile", "./Dockerfile", False),
])
def test_paths_are_doublestar_globs(path: str, pattern: str, expected: bool) -> None:
    assert path_matches(path, pattern) is expected


def test_vulnerability_paths_match_target_or_package_path() -> None:
    findings = load_report(FIX / "image-all-classes.json").findings
    lodash = [f for f in findings if f.id == "GHSA-xxxx-0001"]
    by_pkg_path = "vulnerabilities:\n  - {id: GHSA-xxxx-0001, statement: x, expired_at: 2027-01-01, paths: [app/**]}\n"
    by_target = ("vulnerabilities:\n  - {id: GHSA-xxxx-0001, statement: x, expired_at: 2027-01-01, "
                 "paths: [Node.js]}\n")
    star = "vulnerabilities:\n  - {id: GHSA-xxxx-0001, statement: x, expired_at: 2027-01-01, paths: [app/*]}\n"
    assert gate(lodash, by_pkg_path).ignored and gate(lodash, by_target).ignored
    assert not gate(lodash, star).ignored   # '*' does not cross '/'


@pytest.mark.parametrize(("purl", "ignored"), [
    ("pkg:npm/lodash", True),                              # no version: any version
    ("pkg:npm/lodash@4.17.20", True),
    ("pkg:npm/lodash@4.17.21", False),
    ("pkg:npm/underscore", False),
    ("pkg:deb/debian/lodash", False),                      # type must match
])
def test_purls(purl: str, ignored: bool) -> None:
    lodash = [f for f in load_report(FIX / "image-all-classes.json").findings if f.id == "GHSA-xxxx-0001"]
    text = f"vulnerabilities:\n  - {{id: GHSA-xxxx-0001, statement: x, expired_at: 2027-01-01, purls: ['{purl}']}}\n"
    assert bool(gate(lodash, text).ignored) is ignored


def test_purl_qualifiers_must_all_be_on_the_finding() -> None:
    bash = [f for f in load_report(FIX / "os-pkgs.json").findings if f.id == "CVE-2099-0001"]
    entry = "vulnerabilities:\n  - {{id: CVE-2099-0001, statement: x, expired_at: 2027-01-01, purls: ['{}']}}\n"
    assert gate(bash, entry.format("pkg:deb/debian/bash?arch=amd64")).ignored
    assert not gate(bash, entry.format("pkg:deb/debian/bash?arch=arm64")).ignored
    assert gate(bash, entry.format("pkg:deb/debian/bash")).ignored
    no_purl = [Finding(kind="vulnerability", id="CVE-2099-0001", severity="HIGH", target="t", package="bash")]
    assert gate(no_purl, entry.format("pkg:deb/debian/openssl")).ignored   # Trivy: no purl, not excluded


@pytest.mark.parametrize(("text", "msg"), [
    ("misconfigurations:\n  - {id: DS-0002, purls: ['pkg:npm/x']}", "purls apply to vulnerabilities only"),
    ("vulnerabilities:\n  - {id: X, purls: ['not-a-purl']}", "purl 'not-a-purl' is invalid"),
    ("vulnerabilities:\n  - {id: X, paths: ['a/[b']}", "invalid path pattern"),
    ("misconfiguration:\n  - {id: X}", "unknown top-level key"),
    ("vulnerabilities:\n  - {id: X, expired: 2027-01-01}", "unknown key"),
])
def test_malformed_fields(text: str, msg: str) -> None:
    with pytest.raises(IgnoreFileError, match=msg):
        parse_ignore_file(text)


def test_scan_gate_passes_the_reported_case_and_lists_unused_entries(tmp_path: Path) -> None:
    """Case 4 end to end: `id: AVD-DS-0002` against a report saying ID DS002 / AVDID AVD-DS-0002 (was exit 3)."""
    import json

    from pipeline.stages.scan import run_scan_gate

    report = tmp_path / "config.json"
    report.write_text(json.dumps({"SchemaVersion": 2, "ArtifactName": "dockerfiles", "Results": [
        {"Target": "dockerfiles/api.Dockerfile", "Class": "config", "Type": "dockerfile", "Misconfigurations": [
            {"Type": "Dockerfile Security Check", "ID": "DS002", "AVDID": "AVD-DS-0002", "Status": "FAIL",
             "Severity": "HIGH", "Title": "Image user should not be 'root'"}]}]}))
    ign = tmp_path / ".trivyignore.yaml"
    ign.write_text("ignores:\n  - id: AVD-DS-0002\n    reason: the init container needs root\n    expires: 2099-01-01\n"
                   "  - id: CVE-2000-0001\n    reason: old\n    expires: 2099-01-01\n")
    lines: list[str] = []
    verdict = run_scan_gate(str(report), "HIGH", ignore_file=str(ign), log=lines.append)
    assert verdict.passed and len(verdict.ignored) == 1
    assert any(line.startswith("unused ignore entries") and "CVE-2000-0001" in line for line in lines)


# ------------------------------------------------------------------ Trivy's plain .trivyignore

def test_plain_trivyignore_is_read_by_extension(tmp_path: Path) -> None:
    from pipeline.gate.ignorefile import load_ignore_file

    f = tmp_path / ".trivyignore"
    f.write_text("# accepted risks\nCVE-2099-0001 exp:2027-01-01 # bash is never run\n\nAVD-DS-0002\n"
                 "CVE-2099-0002 exp:2026-06-01 # expires today\n")
    ign = load_ignore_file(f)
    assert [(e.id, e.reason, e.line) for e in ign.entries] == [
        ("CVE-2099-0001", "bash is never run", 2), ("AVD-DS-0002", "", 4), ("CVE-2099-0002", "expires today", 5)]
    findings = [*load_report(FIX / "os-pkgs.json").findings, misconf("DS-0002")]
    v = evaluate(findings, Policy("LOW", False, ign), TODAY)
    assert [f.id for f, _ in v.ignored] == ["CVE-2099-0001"]          # every class: IDs apply to all
    ids = {f.id for f in v.blocking}
    assert {"IGNORE-NO-REASON", "IGNORE-EXPIRED", "DS-0002", "CVE-2099-0002"} <= ids


@pytest.mark.parametrize("bad", ["exp:2026-02-30", "exp:2026-13-01", "exp:2026-W09-1", "exp:tomorrow"])
def test_plain_trivyignore_bad_dates_are_one_line_errors(tmp_path: Path, bad: str) -> None:
    from pipeline.gate.ignorefile import load_ignore_file

    f = tmp_path / ".trivyignore"
    f.write_text(f"# header\nCVE-2024-0001 {bad} # accepted\n")
    with pytest.raises(IgnoreFileError) as exc:
        load_ignore_file(f)
    value = bad.removeprefix("exp:")
    assert exc.value.one_line() == (f"{f}: entry 1 (line 2): exp '{value}' is not a date "
                                    "(fix: write a real calendar date as exp:YYYY-MM-DD, e.g. exp:2026-02-28)")


@pytest.mark.parametrize(("line", "entry"), [
    # Trivy has no end-of-line comment: an exp: after '#' is still the expiry
    ("CVE-2024-0001 # accepted until exp:2025-01-01", ("CVE-2024-0001", "accepted until", "2025-01-01")),
    # '#' glued to the ID is part of the ID (strings.Fields): it matches nothing, as in Trivy
    ("CVE-2024-0001#note", ("CVE-2024-0001#note", "", None)),
    ("   CVE-2024-0001   exp:2027-01-01   # trailing spaces   \t", ("CVE-2024-0001", "trailing spaces", "2027-01-01")),
    ("  # an indented comment line", None),
    ("cve-2024-0001 # lowercase stays as written", ("cve-2024-0001", "lowercase stays as written", None)),
])
def test_plain_trivyignore_fields_as_trivy_reads_them(line: str, entry: tuple[str, str, str | None] | None) -> None:
    from pipeline.gate.ignorefile import parse_plain_ignore_file

    got = parse_plain_ignore_file(line + "\n").entries
    if entry is None:
        assert got == ()
        return
    (e,) = got
    assert (e.id, e.reason, e.expires.date().isoformat() if e.expires else None) == entry


def test_plain_trivyignore_expiry_after_a_hash_expires(tmp_path: Path) -> None:
    """`CVE # note exp:<past>`: Trivy prunes the entry, so the finding is reported; so must the gate."""
    from pipeline.gate.ignorefile import load_ignore_file

    f = tmp_path / ".trivyignore"
    f.write_text("CVE-2099-0001 # accepted exp:2020-01-01\n")
    findings = [x for x in load_report(FIX / "os-pkgs.json").findings if x.id == "CVE-2099-0001"]
    v = evaluate(findings, Policy("LOW", False, load_ignore_file(f)), TODAY)
    assert not v.ignored and {"CVE-2099-0001", "IGNORE-EXPIRED"} <= {x.id for x in v.blocking}


def test_plain_trivyignore_ids_are_case_sensitive(tmp_path: Path) -> None:
    from pipeline.gate.ignorefile import load_ignore_file

    f = tmp_path / ".trivyignore"
    f.write_text("cve-2099-0001 exp:2027-01-01 # lowercase\n")
    findings = [x for x in load_report(FIX / "os-pkgs.json").findings if x.id == "CVE-2099-0001"]
    v = evaluate(findings, Policy("LOW", False, load_ignore_file(f)), TODAY)
    assert not v.ignored and "CVE-2099-0001" in {x.id for x in v.blocking}
