"""The run report: JSON for machines, Markdown for humans and CI job summaries, HTML with a timeline
(pipeline.release.html_report); secrets redacted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.manifest import Manifest, Scanned, StageRecord, atomic_write
from pipeline.core.redact import redact
from pipeline.core.vocab import StageStatus, now_iso
from pipeline.observe.recorder import read_events

if TYPE_CHECKING:
    from pipeline.contract.context import Outcome, RunContext


def shown_stages(ctx: RunContext, outcomes: Sequence[Outcome]) -> list[str]:
    """The stages a report lists: the environment's, then any unlisted one (attached to a stage or closing the
    release: pipeline/core/stage_registry.py) that failed, was blocked or interrupted. An unlisted stage that
    went well is in the manifest's `stages` and in what the report says of it (`published`, `sbom_ref`)."""
    quiet = (StageStatus.OK, StageStatus.RESUMED, StageStatus.SKIPPED)
    return [*ctx.env.stages, *(o.name for o in outcomes if o.name not in ctx.env.stages and o.status not in quiet)]


def report_data(ctx: RunContext, outcomes: Sequence[Outcome], *, status: str, error: str,
                duration_s: float) -> dict[str, Any]:
    """The run report's data: stages (status, timing, detail), per-service results, the deploy record, cache
    hits (services reused in this run, from events.jsonl), paths. Schema 1 (fields are only ever added)."""
    from pipeline.release.html_report import cache_hits

    m = ctx.manifest
    by_name = {o.name: o for o in outcomes}
    services = {name: _service_row(m, name) for name in m.services()}
    infra = {name: _infra_row(m.infra_scanned(name)) for name in m.infra_names()}
    deploy = m.stage("deploy")
    return {
        "schema": 1, "run_id": ctx.run_id, "release_id": m.release_id, "env": ctx.env.name,
        "status": status, "error": error or None, "finished": now_iso(), "duration_s": round(duration_s, 2),
        "version": m.version_facts(),
        "stages": [({"name": n, "status": str(by_name[n].status), "duration_s": round(by_name[n].duration_s, 2),
                     "started": by_name[n].started, "detail": by_name[n].detail} if n in by_name
                    else {"name": n, "status": "not run"}) for n in shown_stages(ctx, outcomes)],
        # work that is not a stage: the pre-flight, and provisioning that overlapped the stages (the cluster)
        "phases": [{"name": p.name, "status": p.status, "started": p.started, "duration_s": round(p.duration_s, 2)}
                   for p in ctx.state.phases],
        "services": services, "infra": infra, "manifest": str(ctx.manifest.path), "run_dir": str(ctx.run_dir),
        "deploy": _deploy_summary(deploy) if deploy is not None else None,
        "cache_hits": cache_hits(read_events(ctx.run_dir)),
        # post-release verification: each published digest re-read from the registry (signature, provenance,
        # SBOM and VEX attachments), when the environment signs or gates
        "published": ctx.state.published or None,
        # a progressive rollout's analyses and decision (deploy/canary.py, deploy/bluegreen.py), for rollout_section
        "rollout": m.data.get("rollout"),
    }


def _s(status: StrEnum | None) -> str | None:
    return str(status) if status is not None else None


def _counts(scan: Scanned | None) -> dict[str, int] | None:
    return dict(scan.counts) if scan is not None and scan.counts is not None else None


def _service_row(m: Manifest, name: str) -> dict[str, Any]:
    """One service's line of the report, from the manifest's typed views (None where nothing is recorded)."""
    built, pushed, scan = m.built(name), m.pushed(name), m.scanned(name)
    sbom, smoked, deployed, migrated = m.sbom(name), m.smoked(name), m.deployed(name), m.migrated(name)
    digest = pushed.digest if pushed else None
    identity = m.identity(name)
    return {
        "repository": identity.repository, "tags": list(identity.tags) if identity.tags is not None else None,
        "input_digest": identity.input_digest,
        "build": _s(built.status if built else None), "image_id": built.image_id if built else None,
        "build_log": built.log if built else None,
        "reused_from": (built.registry_image or None) if built else None,   # repository@digest in the registry
        "digest": digest, "push": _s(pushed.status if pushed else None),
        "scan": _s(scan.status if scan else None), "scan_counts": _counts(scan),
        "scan_report": scan.report if scan else None, "sbom": scan.sbom if scan else None,
        "sbom_ref": (sbom.ref or None) if sbom else None,
        "smoke": _s(smoked.status if smoked else None),
        # the migrate stage: the database's schema version (failed: the last good one) and the migrator's log
        "migrate": _s(migrated.status if migrated else None),
        "schema_version": migrated.schema_version if migrated else None,
        "migrate_log": (migrated.log or None) if migrated else None,
        "migrate_log_tail": list(migrated.log_tail) if migrated and migrated.log_tail else None,
        # the pg_dump taken before the migration (pipeline/stages/backup.py): file, size, sha256, schema version
        "migrate_backup": (m.stage_result(name, "migrate") or {}).get("backup") if migrated else None,
        "deploy": _s(deployed.status if deployed else None),
        # each place's probes and functional checks (smoke; the deploy's verification; `invoke verify`)
        "checks": {place: [{"name": c.name, "ok": c.ok, **({} if c.ok else {"got": c.got, "expected": c.expected})}
                           for c in rec.checks]
                   for place, rec in (("smoke", smoked), ("deploy", deployed), ("verify", m.verified(name)))
                   if rec is not None and rec.checks},
        "deployed": f"{identity.repository}@{digest}" if deployed is not None and deployed.serving and digest
        else None,
    }


def _infra_row(scan: Scanned | None) -> dict[str, Any]:
    return {"image": scan.ref if scan else None, "scan": _s(scan.status if scan else None),
            "threshold": scan.threshold if scan else None, "scan_counts": _counts(scan),
            "scan_report": scan.report if scan else None}


def _deploy_summary(rec: StageRecord) -> dict[str, Any]:
    """The report's `deploy`: the deploy stage's status, Helm revisions, detail and run id (what was recorded)."""
    out: dict[str, Any] = {"status": str(rec.status)}
    out.update({k: rec.fields[k] for k in ("revision", "previous_revision") if k in rec.fields})
    if rec.detail:
        out["detail"] = rec.detail
    if rec.run_id:
        out["run_id"] = rec.run_id
    return out


def markdown(data: dict[str, Any]) -> str:
    icon = {"ok": "✅", "failed": "❌", "resumed": "↩️", "skipped": "⏭️", "interrupted": "⏹️"}
    lines = [f"# Release `{data['release_id']}` → **{data['env']}**: {data['status']}", ""]
    v = data["version"]
    lines += [f"version `{v.get('version')}`, commit `{v.get('short_sha')}`, branch `{v.get('branch')}`, "
              f"took {data['duration_s']:.1f}s, run `{data['run_id']}`", ""]
    if data.get("error"):
        lines += [f"> **error:** {data['error']}", ""]
    lines += ["| stage | result | duration | detail |", "|---|---|---|---|"]
    for s in data["stages"]:
        lines.append(f"| {s['name']} | {icon.get(s['status'], '')} {s['status']} | {s.get('duration_s', 0):.1f}s "
                     f"| {s.get('detail') or ''} |")
    lines += ["", "| service | build | scan | push | digest | deploy |", "|---|---|---|---|---|---|"]
    for name, s in data["services"].items():
        digest = f"`{s['digest'][:19]}…`" if s.get("digest") else ""
        lines.append(f"| {name} | {s.get('build') or ''} | {s.get('scan') or ''} | {s.get('push') or ''} | {digest} "
                     f"| {s.get('deploy') or ''} |")
    reused = [(n, s["reused_from"]) for n, s in data["services"].items() if s.get("reused_from")]
    if reused:
        lines += ["", "Reused from the registry by input digest (not built, no layer pushed): "
                  + ", ".join(f"{n} `{ref}`" for n, ref in reused)]
    if data.get("infra"):
        lines += ["", "| infra image | scan | threshold | findings |", "|---|---|---|---|"]
        for name, i in data["infra"].items():
            counts = ", ".join(f"{n} {sev}" for sev, n in (i.get("scan_counts") or {}).items() if n) or "none"
            lines.append(f"| {name} (`{i.get('image') or ''}`) | {i.get('scan') or ''} | {i.get('threshold') or ''} "
                         f"| {counts} |")
    if data.get("published"):
        lines += ["", "## Published digests, re-read from the registry", "",
                  "| service or infra image | image | signature | provenance | SBOM | VEX |",
                  "|---|---|---|---|---|---|"]
        for n, p in data["published"].items():
            lines.append(f"| {n} | `{p['image']}` | {p['signature']} | {p['provenance']} | {p['sbom']} | {p['vex']} |")
    checks = [(n, place, c) for n, s in data["services"].items()
              for place, cs in (s.get("checks") or {}).items() if place != "smoke" for c in cs]
    if checks:
        lines += ["", "## Functional checks after the deploy", "", "| service | where | check | result |",
                  "|---|---|---|---|"]
        for n, place, c in checks:
            result = "✅ ok" if c["ok"] else f"❌ expected {c.get('expected')}, got {c.get('got')}"
            lines.append(f"| {n} | {place} | {c['name']} | {result} |")
    for n, s in data["services"].items():
        if s.get("migrate"):
            lines += ["", f"Schema of {n}: {s['migrate']}, database at version {s.get('schema_version')}"]
            if b := s.get("migrate_backup"):
                lines += ["", f"Backup before the migration: `{b['file']}` ({b['size']} bytes, `{b['sha256']}`), "
                              f"schema version {b['schema_version']}, revision {b['revision'] or 'none'} serving, "
                              f"taken {b['at']}"]
            if s.get("migrate_log_tail"):
                lines += ["", "```", *s["migrate_log_tail"], "```"]
    links = [(n, s[k]) for n, s in data["services"].items()
             for k in ("build_log", "scan_report", "sbom", "migrate_log") if s.get(k)]
    links += [(f"infra/{n}", i["scan_report"]) for n, i in (data.get("infra") or {}).items() if i.get("scan_report")]
    if links:
        lines += ["", "## Logs and reports", ""] + [f"- {n}: `{p}`" for n, p in links]
    return "\n".join(lines) + "\n"


def write_report(ctx: RunContext, outcomes: Sequence[Outcome], *, status: str, error: str,
                 duration_s: float) -> tuple[Path, Path, Path]:
    """Write report.json, report.md and report.html into the run directory, refresh the environment's history
    page (`<state_dir>/<env>/runs/index.html`); returns the three report paths."""
    from pipeline.release.html_report import write_html_report

    data = report_data(ctx, outcomes, status=status, error=error, duration_s=duration_s)
    jpath, mpath = ctx.run_dir / "report.json", ctx.run_dir / "report.md"
    atomic_write(jpath, redact(json.dumps(data, indent=2)) + "\n")
    atomic_write(mpath, redact(markdown(data)))
    return jpath, mpath, write_html_report(data, ctx.run_dir)
