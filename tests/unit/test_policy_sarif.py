"""SARIF and Markdown outputs of the scan gate (from real report fixtures)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pipeline.gate.policy import Policy, Verdict, evaluate, load_report, parse_ignore_file
from pipeline.gate.sarif import to_markdown, to_sarif

FIX = Path(__file__).parent / "fixtures" / "trivy"
IGNORE = "ignores:\n  - {id: GHSA-xxxx-0001, reason: dev-only dependency, expires: 2099-01-01}\n"


def verdict() -> Verdict:
    findings = load_report(FIX / "image-all-classes.json").findings
    return evaluate(findings, Policy("CRITICAL", False, parse_ignore_file(IGNORE)), date(2026, 6, 1))


def test_sarif_levels_rules_locations_and_suppressions() -> None:
    doc = to_sarif([("svc-a", verdict())], "0.76.0")
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    assert run["tool"]["driver"]["version"] == "0.76.0"
    results = {r["ruleId"]: r for r in run["results"]}
    assert results["CVE-2099-0001"]["level"] == "warning"          # HIGH, below the CRITICAL threshold
    assert results["aws-access-key-id"]["level"] == "error"        # CRITICAL: blocking
    loc = results["aws-access-key-id"]["locations"][0]["physicalLocation"]
    assert loc == {"artifactLocation": {"uri": "app/credentials"}, "region": {"startLine": 1}}
    assert results["GHSA-xxxx-0001"]["suppressions"] == [{"kind": "external", "justification": "dev-only dependency"}]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert rules["aws-access-key-id"]["properties"]["security-severity"] == "9.5"
    assert "5.2.15-2+b13" in results["CVE-2099-0001"]["message"]["text"]


def test_markdown_summary() -> None:
    md = to_markdown([("svc-a", verdict())], "Scan gate")
    assert md.startswith("# Scan gate")
    assert "| svc-a | ❌ blocked | CRITICAL | 2 | 1 | 0 | 0 | 0 | 1 |" in md
    assert "| aws-access-key-id | AWS Access Key ID | secret | CRITICAL | /app/credentials:1 |" in md
    assert "- GHSA-xxxx-0001 (lodash): dev-only dependency" in md
