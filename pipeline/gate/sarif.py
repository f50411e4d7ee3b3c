"""Scan verdicts → SARIF 2.1.0 (for code-scanning upload) and a Markdown summary (for CI job pages).

Ignored findings are kept, as SARIF suppressions carrying the ignore entry's reason: reviewers see
what was accepted and why. Blocking findings are level "error"; other findings "warning" or "note".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.manifest import atomic_write
from pipeline.core.vocab import SEVERITIES
from pipeline.core.vocab import SEVERITY_RANK as RANK
from pipeline.gate.policy import Finding, Verdict

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL = "veza-pipeline scan gate (Trivy)"
# GitHub code scanning ranks security results by this property (CVSS-like scale).
SECURITY_SEVERITY = {"CRITICAL": "9.5", "HIGH": "8.0", "MEDIUM": "5.5", "LOW": "2.0", "UNKNOWN": "0.0"}

Subject = tuple[str, Verdict]   # (what was scanned: a service, an image or a report file, its verdict)


def _level(f: Finding, v: Verdict) -> str:
    if RANK[f.severity] >= RANK[v.threshold]:
        return "error"
    return "warning" if RANK[f.severity] >= RANK["MEDIUM"] else "note"


def _message(f: Finding) -> str:
    if f.kind == "vulnerability":
        fix = f"fixed in {f.fixed}" if f.fixed else "no fixed version yet"
        return f"{f.id}: {f.package} {f.installed} ({fix}) in {f.target}. {f.title}".strip()
    return f"{f.id}: {f.title} ({f.target}){' - fix: ' + f.resolution if f.resolution else ''}"


def _location(f: Finding, subject: str) -> dict[str, Any]:
    uri = (f.path or f.target or subject).lstrip("/") or subject
    loc: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": uri}}}
    if f.line > 0:
        loc["physicalLocation"]["region"] = {"startLine": f.line}
    loc["logicalLocations"] = [{"name": subject, "kind": "module"}]
    return loc


def to_sarif(subjects: Sequence[Subject], tool_version: str = "") -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []

    def add(f: Finding, v: Verdict, subject: str, suppression: str | None) -> None:
        rule = rules.setdefault(f.id, {
            "id": f.id, "name": f.kind, "shortDescription": {"text": f.title or f.id},
            "properties": {"security-severity": SECURITY_SEVERITY[f.severity], "tags": ["security", f.kind]},
        })
        if f.url:
            rule["helpUri"] = f.url
        # a rule shared by findings of several severities keeps the highest one
        if float(SECURITY_SEVERITY[f.severity]) > float(rule["properties"]["security-severity"]):
            rule["properties"]["security-severity"] = SECURITY_SEVERITY[f.severity]
        res: dict[str, Any] = {
            "ruleId": f.id, "level": _level(f, v), "message": {"text": _message(f)},
            "locations": [_location(f, subject)],
            "properties": {"severity": f.severity, "subject": subject, "package": f.package,
                           "installedVersion": f.installed, "fixedVersion": f.fixed},
        }
        if suppression is not None:
            res["suppressions"] = [{"kind": "external", "justification": suppression}]
        results.append(res)

    for subject, v in subjects:
        for f in v.findings:
            add(f, v, subject, None)
        for f, reason in v.ignored:
            add(f, v, subject, reason)
    driver: dict[str, Any] = {"name": TOOL, "informationUri": "https://trivy.dev", "rules": list(rules.values())}
    if tool_version:
        driver["version"] = tool_version
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{"tool": {"driver": driver}, "results": results}]}


def write_sarif(path: Path, subjects: Sequence[Subject], tool_version: str = "") -> Path:
    atomic_write(path, json.dumps(to_sarif(subjects, tool_version), indent=2) + "\n")
    return path


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(subjects: Sequence[Subject], title: str = "Scan gate", limit: int = 50) -> str:
    lines = [f"# {title}", "", "| subject | verdict | threshold | " + " | ".join(reversed(SEVERITIES)) + " | ignored |",
             "|---|---|---|" + "---|" * (len(SEVERITIES) + 1)]
    for subject, v in subjects:
        mark = "✅ pass" if v.passed else "❌ blocked"
        counts = " | ".join(str(v.counts.get(s, 0)) for s in reversed(SEVERITIES))
        lines.append(f"| {_cell(subject)} | {mark} | {v.threshold} | {counts} | {len(v.ignored)} |")
    for subject, v in subjects:
        if not v.blocking:
            continue
        lines += ["", f"## {subject}: {len(v.blocking)} blocking finding(s)", "",
                  "| ID | package | installed → fixed | severity | target |", "|---|---|---|---|---|"]
        for f in v.blocking[:limit]:
            versions = f"{f.installed} → {f.fixed or '(no fix)'}" if f.kind == "vulnerability" else f.kind
            target = f.target + (f":{f.line}" if f.line else "")
            lines.append(f"| {_cell(f.id)} | {_cell(f.package or f.title)} | {_cell(versions)} | {f.severity} "
                         f"| {_cell(target)} |")
        if len(v.blocking) > limit:
            lines.append(f"| … | {len(v.blocking) - limit} more | | | |")
    for subject, v in subjects:
        if v.ignored:
            lines += ["", f"## {subject}: ignored by the ignore file", ""]
            lines += [f"- {f.id} ({f.package or f.target}): {reason}" for f, reason in v.ignored]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, subjects: Sequence[Subject], title: str = "Scan gate") -> Path:
    atomic_write(path, to_markdown(subjects, title))
    return path
