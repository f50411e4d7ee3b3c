"""The scan policy, pure: Trivy JSON reports (SchemaVersion 2) → findings → a pass/blocked verdict.

Every class of Trivy result is read: os-pkgs and lang-pkgs (vulnerabilities), secret (secrets) and
config (misconfigurations; only FAIL entries count). A report without Results is valid and clean.

The ignore file (Trivy's `.trivyignore.yaml`, read by pipeline/gate/ignorefile.py, where each field's
meaning and its source in Trivy are documented) suppresses findings, but only through entries that are
still justified: an entry without a statement/reason or an expiry date, or past its expiry, ignores
nothing and is itself a finding (kind "ignore-file", severity CRITICAL): stale exceptions block the
release until someone renews or removes them. Entries that matched nothing are listed (unused_ignores).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from pipeline.core.errors import UsageError
from pipeline.core.vocab import SEVERITIES
from pipeline.core.vocab import SEVERITY_RANK as RANK
from pipeline.gate.ignorefile import IgnoreEntry as IgnoreEntry  # re-exported: the gate's public names
from pipeline.gate.ignorefile import IgnoreFile as IgnoreFile
from pipeline.gate.ignorefile import IgnoreFileError as IgnoreFileError
from pipeline.gate.ignorefile import load_ignore_file as load_ignore_file
from pipeline.gate.ignorefile import parse_ignore_file as parse_ignore_file

SCHEMA_VERSION = 2


class ReportError(UsageError):
    """A Trivy report that is not JSON, not SchemaVersion 2, or not shaped like a Trivy report (exit 2)."""


def severity(value: str) -> str:
    """Normalise a severity name; an unknown name is a usage error."""
    v = (value or "").strip().upper()
    if v not in RANK:
        raise UsageError(f"unknown severity '{value}'", f"use one of: {', '.join(SEVERITIES)}")
    return v


@dataclass(frozen=True)
class Finding:
    """One problem found in an artifact, whatever its class."""

    kind: str            # vulnerability | secret | misconfig | ignore-file
    id: str              # CVE/GHSA ID, secret rule ID, misconfiguration ID, or IGNORE-* for the ignore file
    severity: str
    target: str          # Trivy's target (image + OS, lockfile, file path, ...)
    klass: str = ""      # Trivy's result class: os-pkgs, lang-pkgs, secret, config; "policy" for ours
    type: str = ""       # Trivy's result type: debian, node-pkg, gobinary, dockerfile, ...
    package: str = ""
    installed: str = ""
    fixed: str = ""
    status: str = ""     # Trivy's vulnerability status: fixed, affected, will_not_fix, ...
    title: str = ""
    path: str = ""       # package path inside the target, or the file of a secret/misconfiguration
    line: int = 0
    url: str = ""
    resolution: str = ""
    aliases: tuple[str, ...] = ()   # other IDs of the same finding (a check's AVDID, LongID, Aliases)
    purl: str = ""                  # the package URL of a vulnerable package (PkgIdentifier.PURL)

    @property
    def has_fix(self) -> bool:
        return bool(self.fixed)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v not in ("", 0, ())}


@dataclass(frozen=True)
class ParsedReport:
    artifact: str
    artifact_type: str
    image_id: str
    findings: tuple[Finding, ...]
    targets: tuple[str, ...]


def load_report(path: Path) -> ParsedReport:
    """Read and parse a Trivy JSON report file (ReportError on anything else)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ReportError(f"report not found: {path}",
                          "pass the path of a Trivy JSON report (--format json)") from None
    except OSError as exc:
        raise ReportError(f"cannot read report {path}: {exc.strerror}",
                          "check the path and its permissions") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})",
                          "produce the report with `trivy ... --format json`") from None
    return parse_report(data, source=str(path))


def parse_report(data: Any, source: str = "report") -> ParsedReport:
    """Turn a Trivy report (already decoded JSON) into findings, for every result class."""
    if not isinstance(data, dict):
        raise ReportError(f"{source}: not a Trivy JSON report (top level is {type(data).__name__})",
                          "produce the report with `trivy ... --format json`")
    if data.get("SchemaVersion") != SCHEMA_VERSION:
        raise ReportError(f"{source}: SchemaVersion {data.get('SchemaVersion')!r} is not supported",
                          "use a Trivy report with SchemaVersion 2 (trivy >= 0.20, --format json)")
    results = data.get("Results") or []
    if not isinstance(results, list):
        raise ReportError(f"{source}: Results is not a list", "pass an unmodified Trivy JSON report")
    findings: list[Finding] = []
    targets: list[str] = []
    for i, res in enumerate(results):
        if not isinstance(res, dict):
            raise ReportError(f"{source}: Results[{i}] is not an object",
                              "pass an unmodified Trivy JSON report")
        target = str(res.get("Target", ""))
        targets.append(target)
        klass = str(res.get("Class", ""))
        rtype = str(res.get("Type", ""))
        for v in res.get("Vulnerabilities") or []:
            findings.append(Finding(
                kind="vulnerability", id=str(v.get("VulnerabilityID", "")), severity=_sev(v.get("Severity")),
                target=target, klass=klass, type=rtype, package=str(v.get("PkgName", "")),
                installed=str(v.get("InstalledVersion", "")), fixed=str(v.get("FixedVersion") or ""),
                status=str(v.get("Status", "")), title=str(v.get("Title") or ""),
                path=str(v.get("PkgPath") or ""), url=str(v.get("PrimaryURL") or ""),
                purl=str((v.get("PkgIdentifier") or {}).get("PURL") or ""),
            ))
        for s in res.get("Secrets") or []:
            findings.append(Finding(
                kind="secret", id=str(s.get("RuleID", "")), severity=_sev(s.get("Severity")), target=target,
                klass=klass or "secret", type=rtype, title=str(s.get("Title") or s.get("Category") or ""),
                path=target, line=int(s.get("StartLine") or 0),
                resolution="remove the secret from the image and rotate it",
            ))
        for m in res.get("Misconfigurations") or []:
            if str(m.get("Status", "FAIL")).upper() != "FAIL":
                continue  # --include-non-failures adds PASS/EXCEPTION entries: not findings
            cause = m.get("CauseMetadata") or {}
            ident = str(m.get("ID") or m.get("AVDID") or "")
            others = [m.get("AVDID"), m.get("LongID"), *(m.get("Aliases") or [])]
            findings.append(Finding(
                kind="misconfig", id=ident,
                aliases=tuple(dict.fromkeys(str(a) for a in others if a and str(a) != ident)),
                severity=_sev(m.get("Severity")),
                target=target, klass=klass or "config", type=rtype,
                title=str(m.get("Title") or m.get("Message") or ""), path=target,
                line=int(cause.get("StartLine") or 0), url=str(m.get("PrimaryURL") or ""),
                resolution=str(m.get("Resolution") or ""),
            ))
    meta = data.get("Metadata") or {}
    return ParsedReport(
        artifact=str(data.get("ArtifactName", "")), artifact_type=str(data.get("ArtifactType", "")),
        image_id=str(meta.get("ImageID", "")) if isinstance(meta, dict) else "",
        findings=tuple(findings), targets=tuple(targets),
    )


def _sev(value: Any) -> str:
    v = str(value or "UNKNOWN").upper()
    return v if v in RANK else "UNKNOWN"


# ---------------------------------------------------------------- ignore file

def ignore_file_findings(ignores: IgnoreFile, now: datetime | date) -> tuple[list[Finding], list[IgnoreEntry]]:
    """Split entries into findings (no reason, no expiry, expired) and the valid entries that may ignore.

    now: the instant of the check (a date means noon UTC that day). An entry is expired when its expiry
    instant is before now, as Trivy decides (a bare date expires at 00:00 UTC that day).
    """
    when = _instant(now)
    findings: list[Finding] = []
    valid: list[IgnoreEntry] = []
    for e in ignores.entries:
        problem = ""
        if not e.reason:
            problem, rule = "has no reason", "IGNORE-NO-REASON"
            fix = "add a reason saying why the risk is accepted"
        elif e.expires is None:
            problem, rule, fix = "has no expiry date", "IGNORE-NO-EXPIRY", "add expires: YYYY-MM-DD"
        elif e.expired(when):
            shown = e.expires.date().isoformat() if e.expires.time() == time(0) else e.expires.isoformat()
            problem, rule = f"expired on {shown}", "IGNORE-EXPIRED"
            fix = "fix the finding, or review the exception and set a new expiry date"
        if problem:
            findings.append(Finding(
                kind="ignore-file", id=rule, severity="CRITICAL", target=ignores.path, klass="policy",
                title=f"ignore entry for {e.id} {problem}", path=ignores.path, line=e.line, package=e.id,
                resolution=fix,
            ))
        else:
            valid.append(e)
    return findings, valid


# ---------------------------------------------------------------- verdict

@dataclass(frozen=True)
class Policy:
    threshold: str = "HIGH"
    ignore_unfixed: bool = False
    ignores: IgnoreFile = field(default_factory=lambda: IgnoreFile("", ()))


@dataclass(frozen=True)
class Verdict:
    status: str                                  # pass | blocked
    threshold: str
    ignore_unfixed: bool
    counts: Mapping[str, int]                    # active findings by severity
    blocking: tuple[Finding, ...]
    findings: tuple[Finding, ...]                # active (not ignored, not skipped as unfixed)
    ignored: tuple[tuple[Finding, str], ...]     # (finding, reason of the entry that ignored it)
    unfixed_skipped: int = 0
    unused_ignores: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self, limit: int = 50) -> dict[str, Any]:
        """The manifest's view: counts, the first `limit` blocking findings, and how many were ignored."""
        return {
            "status": self.status, "threshold": self.threshold, "ignore_unfixed": self.ignore_unfixed,
            "counts": dict(self.counts), "blocking_count": len(self.blocking),
            "blocking": [f.to_dict() for f in self.blocking[:limit]],
            "ignored_count": len(self.ignored), "unfixed_skipped": self.unfixed_skipped,
            "unused_ignores": list(self.unused_ignores),
        }


def _instant(now: datetime | date) -> datetime:
    if isinstance(now, datetime):
        return now if now.tzinfo else now.replace(tzinfo=UTC)
    return datetime.combine(now, time(12, 0), tzinfo=UTC)


def evaluate(findings: Iterable[Finding], policy: Policy, today: date | datetime | None = None) -> Verdict:
    """Apply the policy: drop unfixed (if asked), apply valid ignore entries, block at the threshold.

    today: the date (noon UTC) or instant the ignore entries' expiry is checked against (default: now).
    """
    threshold = severity(policy.threshold)
    policy_findings, valid = ignore_file_findings(policy.ignores, today or datetime.now(UTC))
    active: list[Finding] = []
    ignored: list[tuple[Finding, str]] = []
    used: set[int] = set()
    skipped = 0
    for f in findings:
        if policy.ignore_unfixed and f.kind == "vulnerability" and not f.has_fix:
            skipped += 1
            continue
        entry = next((e for e in valid if e.matches(f)), None)
        if entry is not None:
            used.add(id(entry))
            ignored.append((f, entry.reason))
            continue
        active.append(f)
    active.extend(policy_findings)
    active.sort(key=sort_key)
    blocking = tuple(f for f in active if RANK[f.severity] >= RANK[threshold])
    counts = {s: 0 for s in reversed(SEVERITIES)}
    for f in active:
        counts[f.severity] += 1
    return Verdict(
        status="blocked" if blocking else "pass", threshold=threshold, ignore_unfixed=policy.ignore_unfixed,
        counts=counts, blocking=blocking, findings=tuple(active), ignored=tuple(ignored),
        unfixed_skipped=skipped,
        unused_ignores=tuple(e.id for e in valid if id(e) not in used),
    )


def sort_key(f: Finding) -> tuple[int, str, str, str]:
    return (-RANK[f.severity], f.kind, f.id, f.package or f.target)
