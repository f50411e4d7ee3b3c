"""The scan stage and the scan gate.

`scan_images` (the scan stage, `ScanStage`) scans every image the release ships or runs with Trivy
(vulnerabilities, secrets, misconfigurations), in parallel and offline (the DB is fetched once, first, from the
configured mirror): the built service images of the Release manifest, and the infra images ([infra.*]:
PostgreSQL, Redis, NATS, as provided by `invoke bases`) whenever the environment runs them (local_infra, or a
compose smoke test). Services are judged at the environment's scan_threshold, infra images at its
infra_scan_threshold. It saves the JSON report and a CycloneDX SBOM per image under <state>/reports/<subject>/,
records each verdict in the manifest (services.<name>.scan, infra.<name>.scan) and says which findings
disappeared (or appeared) since the last scan of a different image of the same subject. A blocked image raises
PolicyBlocked (exit 3)
after a table of the blocking findings.

Unchanged images are not rescanned: the report is cached under the mirror's cache dir
(CACHE_DIR/trivy/mirrors/<repository>/reports), keyed by
(image ID, DB version, scanners, Trivy version). The policy is always re-applied to the cached report, so
an edited ignore file or a stricter environment takes effect without a rescan.

`run_scan_gate` evaluates any Trivy JSON report with the same policy code (CI jobs that scan elsewhere).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.config import Config, Environment
from pipeline.core.errors import PipelineError, PolicyBlocked, StageFailed
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import ScanStatus
from pipeline.gate.history import (
    changes_markdown,
    compare,
    load_history,
    save_history,
    summary_line,
    vulnerability_keys,
)
from pipeline.gate.ignorefile import IgnoreFile, load_ignore_file
from pipeline.gate.policy import (
    Policy,
    Verdict,
    evaluate,
    load_report,
    parse_report,
    severity,
)
from pipeline.gate.sarif import write_markdown, write_sarif
from pipeline.stages.scan_db import cached_mirror_digest, db_drift, prepare_db
from pipeline.stages.scan_targets import ScanTarget, infra_targets, service_targets
from pipeline.tools import trivy

Log = Callable[[str], None]


@dataclass(frozen=True)
class ScanOutcome:
    service: str
    verdict: Verdict | None
    result: dict[str, Any]


# ---------------------------------------------------------------- scan-gate

def run_scan_gate(report: str, fail_on: str = "HIGH", ignore_unfixed: bool = False, ignore_file: str | None = None,
                  sarif: str | None = None, summary: str | None = None, *, today: date | None = None,
                  log: Log = print) -> Verdict:
    """Evaluate a Trivy JSON report; raise PolicyBlocked (exit 3) when findings reach the threshold."""
    threshold = severity(fail_on)
    ignores = load_ignore_file(Path(ignore_file)) if ignore_file else IgnoreFile("", ())
    parsed = load_report(Path(report))
    verdict = evaluate(parsed.findings, Policy(threshold, ignore_unfixed, ignores), today)
    subject = parsed.artifact or Path(report).name
    if sarif:
        write_sarif(Path(sarif), [(subject, verdict)], parsed_trivy_version(report))
    if summary:
        write_markdown(Path(summary), [(subject, verdict)], "Scan gate")
    log(_verdict_line(subject, verdict))
    if verdict.unused_ignores:
        log(f"unused ignore entries (they matched no finding; remove them?): {', '.join(verdict.unused_ignores)}")
    if not verdict.passed:
        print_blocking(subject, verdict)
        raise PolicyBlocked(f"scan gate blocked {subject}: {len(verdict.blocking)} finding(s) at or above {threshold}",
                            "fix them (upgrade the packages, remove the secrets) or add a justified, dated entry "
                            "to the ignore file")
    return verdict


def parsed_trivy_version(report: str) -> str:
    import json

    try:
        return str(json.loads(Path(report).read_text()).get("Trivy", {}).get("Version", ""))
    except (OSError, ValueError, AttributeError):
        return ""


# ---------------------------------------------------------------- scan stage

def scan_images(cfg: Config, env: Environment, man: Manifest, reporter: Reporter, services: list[str] | None = None,
                *, workers: int | None = None, cache_dir: Path | None = None,
                today: date | None = None) -> StageSummary:
    """Scan the built images of the Release manifest and apply env's gate.

    Records each service's verdict (`scan` record); returns the stage summary (counts, DB version, policy
    fingerprint). Raises UsageError before scanning anything for a bad selection, StageFailed (exit 1) when a
    scan failed, PolicyBlocked (exit 3) when the gate blocked, after recording every verdict.
    """
    started = time.monotonic()
    log = reporter.info
    targets = service_targets(cfg, man, services)
    ignores = load_ignore_file(cfg.scan.ignore_file) if cfg.scan.ignore_file.is_file() else IgnoreFile("", ())
    policy = Policy(env.scan_threshold, env.ignore_unfixed, ignores)
    if not services:
        infra, why_not = infra_targets(cfg, env, Policy(env.infra_threshold, env.ignore_unfixed, ignores))
        targets += infra
        if why_not:
            log(f"scan: infra images not scanned: {why_not}")
    cache = cache_dir or trivy.default_cache_dir(cfg.scan.db_repository)
    scanners = cfg.scan.scanners
    db = prepare_db(cfg, cache, log) if "vuln" in scanners else trivy.DbInfo(False, "no-vuln-scan")
    key_base = f"{db.version}|{','.join(sorted(scanners))}|{trivy.version()}"
    reports_dir = man.path.parent / "reports"
    history_file = man.path.parent / "scan-history" / f"{env.name}.json"
    history = load_history(history_file)

    def task(t: ScanTarget) -> ScanOutcome:
        reporter.step("scan", t.service, f"scanning {t.image_id[7:19]}")
        try:
            return _scan_one(t, key_base, cache, reports_dir, scanners, t.policy or policy, cfg.scan.timeout_s,
                             today, db.version)
        except PipelineError as exc:
            return ScanOutcome(t.service, None, {"status": ScanStatus.ERROR, "image_id": t.image_id,
                                                 "error": exc.one_line()})

    n = max(1, min(workers or cfg.build.workers or 2, len(targets)))
    outcomes: list[ScanOutcome] = []
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="scan") as pool:
        for t, out in zip(targets, pool.map(task, targets), strict=True):
            if out.verdict is not None:
                _compare_with_last_scan(out, history, log)
            if t.kind == "infra":
                man.record_infra(t.name, "scan", out.result)
            else:
                man.record(out.service, "scan", out.result)
            outcomes.append(out)
            status = out.result["status"]
            state = "failed" if status in ("error", "blocked") else "cached" if out.result.get("cached") else "done"
            reporter.step("scan", out.service, _outcome_line(out).split(": ", 1)[1], state)
    save_history(history_file, history)

    prune_report_cache(cache / "reports")
    judged = [(o.service, o.verdict) for o in outcomes if o.verdict is not None]
    if judged:
        write_sarif(reports_dir / "scan.sarif", judged, trivy.version())
        write_markdown(reports_dir / "scan-summary.md", judged,
                       f"Scan gate ({env.name}, threshold {env.scan_threshold}, infra {env.infra_threshold}, "
                       f"Trivy DB updated {db.updated_at or '?'})")
        changes = {o.service: o.result["since_last_scan"] for o in outcomes if o.result.get("since_last_scan")}
        if changes:
            with (reports_dir / "scan-summary.md").open("a") as fh:
                fh.write(changes_markdown(changes))
    counts = {s: sum(1 for o in outcomes if o.result["status"] == s) for s in ("pass", "blocked", "error")}
    cached = sum(1 for o in outcomes if o.result.get("cached"))
    duration = round(time.monotonic() - started, 3)
    detail = (f"{counts['pass']} pass, {counts['blocked']} blocked, {counts['error']} error(s), "
              f"{cached} reused from the cache")
    log(f"scan: {detail}, {duration:.2f}s")
    blocked = [o for o in outcomes if o.result["status"] == "blocked" and o.verdict is not None]
    for o in blocked:
        assert o.verdict is not None
        print_blocking(o.service, o.verdict)
    fields = {"threshold": env.scan_threshold, "infra_threshold": env.infra_threshold,
              "infra": [t.name for t in targets if t.kind == "infra"], "db_version": db.version,
              "db_mirror": cached_mirror_digest(cache, cfg.scan.db_repository) if cfg.scan.db_repository else "",
              "db_updated_at": db.updated_at, "db_next_update": db.next_update, "cached": cached,
              "policy": policy_fingerprint(cfg, env), "summary": str(reports_dir / "scan-summary.md"), **counts}
    error: PipelineError | None = None
    if counts["error"]:
        errs = "; ".join(f"{o.service}: {o.result.get('error')}" for o in outcomes if o.result["status"] == "error")
        error = StageFailed(f"scan failed for {counts['error']} image(s): {errs}")
    elif blocked:
        names = ", ".join(o.service for o in blocked)
        error = PolicyBlocked(f"scan gate ({env.name}, threshold {env.scan_threshold}, infra {env.infra_threshold}) "
                              f"blocked: {names}",
                              f"see the table above and {reports_dir}/scan-summary.md; fix the findings or add a "
                              f"justified, dated entry to {cfg.scan.ignore_file.name}")
    if error is not None:
        error.record.update(fields)   # the runner records the counts with the failed stage
        raise error
    return StageSummary(detail, fields)


def policy_fingerprint(cfg: Config, env: Environment) -> str:
    """A digest of everything a verdict depends on besides the image and the DB: threshold, unfixed, ignores."""
    ignore = cfg.scan.ignore_file.read_bytes() if cfg.scan.ignore_file.is_file() else b""
    h = hashlib.sha256(f"{env.scan_threshold}|{env.infra_threshold}|{env.ignore_unfixed}|"
                       f"{','.join(cfg.scan.scanners)}|".encode())
    h.update(ignore)
    return "sha256:" + h.hexdigest()


class ScanStage(BaseStage):
    """Trivy over every built image, gated by the environment's policy (exit 3 when blocked)."""

    name = "scan"

    def preflight(self, ctx: RunContext) -> None:
        from pipeline.local.trivydb import ensure_db_mirror

        ensure_db_mirror(ctx.cfg, ctx.reporter.info)

    def holds(self, ctx: RunContext) -> str | None:
        """The recorded verdicts still apply: same images, same policy, the DB the mirror serves now."""
        rec = ctx.manifest.stage("scan")
        fields = rec.fields if rec is not None else {}
        if fields.get("policy") != policy_fingerprint(ctx.cfg, ctx.env):
            return "the scan policy (threshold, ignore file, scanners) changed since the recorded scan"
        if "vuln" in ctx.cfg.scan.scanners and (why := db_drift(
                ctx.cfg, fields, trivy.default_cache_dir(ctx.cfg.scan.db_repository), ctx.registries)):
            return why
        for name in ctx.selected():
            built, scanned = ctx.manifest.built(name), ctx.manifest.scanned(name)
            if built is None or scanned is None or scanned.image_id != built.image_id or not scanned.passed:
                return f"{name}: its image was not scanned as built"
        if not ctx.services:
            from pipeline.tools import docker

            for name in fields.get("infra") or []:
                infra = ctx.manifest.infra_scanned(name)
                if infra is None or not infra.ref or docker.image_id(infra.ref) != infra.image_id:
                    return f"infra/{name}: the image in the engine is not the one scanned"
        return None

    def run(self, ctx: RunContext) -> StageSummary:
        return scan_images(ctx.cfg, ctx.env, ctx.manifest, ctx.reporter, ctx.services or None)


def _compare_with_last_scan(out: ScanOutcome, history: dict[str, Any], log: Log) -> None:
    """Add `since_last_scan` to the result when the subject's image changed; update the history in place."""
    from pipeline.core.vocab import now_iso

    keys = vulnerability_keys(load_report(Path(out.result["report"])).findings)
    diff = compare(history.get(out.service), out.result["image_id"], keys)
    if diff is not None:
        out.result["since_last_scan"] = diff.to_dict()
        log(summary_line(out.service, diff))
    history[out.service] = {"image_id": out.result["image_id"], "at": now_iso(), "keys": keys}


def prune_report_cache(reports: Path, keep: int = 400) -> int:
    """Drop the least recently used cache entries beyond `keep` (each is a report + an SBOM)."""
    try:
        entries = sorted((p for p in reports.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    except FileNotFoundError:
        return 0
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return max(0, len(entries) - keep)


def cache_key(image_id: str, key_base: str) -> str:
    return hashlib.sha256(f"{image_id}|{key_base}".encode()).hexdigest()[:32]


def _scan_one(t: ScanTarget, key_base: str, cache: Path, reports_dir: Path, scanners: Sequence[str],
              policy: Policy, timeout: float, today: date | None, db_version: str) -> ScanOutcome:
    started = time.monotonic()
    entry = cache / "reports" / cache_key(t.image_id, key_base)
    report_c, sbom_c = entry / "report.json", entry / "sbom.cdx.json"
    cached = report_c.is_file() and sbom_c.is_file()
    if cached:
        os.utime(entry)   # recently used: pruning drops the oldest entries first
    if not cached:
        # scan into a temp dir, then move into the cache: a killed scan never leaves half a cache entry
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=entry.parent, prefix=".scan-") as tmp:
            tmp_report = Path(tmp) / "report.json"
            data = trivy.scan_image(t.ref, tmp_report, cache_dir=cache, scanners=tuple(scanners), timeout=timeout,
                                    image_src="remote" if t.remote else "docker",
                                    username=t.username, password=t.password, ca_file=t.ca_file)
            scanned_id = str((data.get("Metadata") or {}).get("ImageID", ""))
            if scanned_id and scanned_id != t.image_id:
                raise StageFailed(f"{t.ref} changed during the scan ({scanned_id} != {t.image_id})",
                                  "do not retag images while the pipeline runs; rerun the scan")
            trivy.sbom_from_report(tmp_report, Path(tmp) / "sbom.cdx.json")
            if not (entry / "report.json").is_file():   # else a parallel scan of the same image won the race
                shutil.rmtree(entry, ignore_errors=True)
                Path(tmp).rename(entry)
                Path(tmp).mkdir()   # TemporaryDirectory cleans up a directory that must exist
    out_dir = reports_dir / t.service
    out_dir.mkdir(parents=True, exist_ok=True)
    report, sbom = out_dir / "trivy.json", out_dir / "sbom.cdx.json"
    shutil.copyfile(report_c, report)
    shutil.copyfile(sbom_c, sbom)
    parsed = parse_report(_json(report), str(report))
    verdict = evaluate(parsed.findings, policy, today)
    result: dict[str, Any] = {
        **verdict.to_dict(), "image_id": t.image_id, "ref": t.ref, "db_version": db_version,
        "cached": cached, "report": str(report), "sbom": str(sbom), "sbom_format": "cyclonedx",
        "duration_s": round(time.monotonic() - started, 3),
    }
    return ScanOutcome(t.service, verdict, result)


def _json(path: Path) -> Any:
    import json

    return json.loads(path.read_text())


# ---------------------------------------------------------------- output

def _verdict_line(subject: str, v: Verdict) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in v.counts.items() if n)
    extra = f"; {len(v.ignored)} ignored" if v.ignored else ""
    extra += f"; {v.unfixed_skipped} unfixed skipped" if v.unfixed_skipped else ""
    return f"{subject}: {v.status.upper()} at {v.threshold} ({counts or 'no findings'}{extra})"


def _outcome_line(o: ScanOutcome) -> str:
    if o.verdict is None:
        return f"scan {o.service}: ERROR {o.result.get('error')}"
    note = " [cached: same image and DB version, not rescanned]" if o.result.get("cached") else ""
    return f"scan {_verdict_line(o.service, o.verdict)}{note}"


def print_blocking(subject: str, v: Verdict, limit: int = 40) -> None:
    from pipeline.core.console import console, table

    t = table(f"{subject}: {len(v.blocking)} blocking finding(s) (threshold {v.threshold})",
              "ID", "package", "installed → fixed", "severity", "target")
    for f in v.blocking[:limit]:
        if f.kind == "vulnerability":
            versions = f"{f.installed} → {f.fixed or '(no fix)'}"
        else:
            versions = f"({f.kind})"
        target = f.target + (f":{f.line}" if f.line else "")
        t.add_row(f.id, f.package or f.title, versions, f.severity, target)
    if len(v.blocking) > limit:
        t.add_row("…", f"{len(v.blocking) - limit} more in the report", "", "", "")
    console.print(t)
