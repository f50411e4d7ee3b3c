"""The HTML run report and the history page: self-contained files (inline CSS and SVG, no script, no network).

    report.html   beside report.json/report.md in the run directory: a Gantt timeline of the stages and of each
                  service's work inside them (from events.jsonl), verdicts, digests and tags, scan findings,
                  the deploy revision, a progressive rollout's analysis (each metric's series against its
                  threshold per step, the decision and its reason), links to the logs and the trace.
    index.html    in `<state_dir>/<env>/runs/`: every run of the environment, duration per stage over time
                  (stacked bars) and cache hits.

Timeline bars carry `class="bar stage"` / `class="bar service"` and `data-stage`/`data-service`, so a test
can count them in the rendered DOM. Analysis charts are `<svg class="analysis" data-step data-metric>` with
`polyline.series.canary|baseline|threshold` and a `circle.point` per judged value (`data-verdict`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from pipeline.core.errors import UsageError
from pipeline.core.manifest import atomic_write
from pipeline.core.redact import redact
from pipeline.gate.analysis import shown_value
from pipeline.observe.recorder import read_events

HISTORY_FILE = "index.html"
COLOR = {"ok": "#2e9e5b", "done": "#2e9e5b", "built": "#2e9e5b", "cached": "#3b82c4", "resumed": "#3b82c4",
         "skipped": "#9aa3ad", "failed": "#d64545", "blocked": "#d64545", "interrupted": "#d9a400"}
PALETTE = ("#3b82c4", "#2e9e5b", "#d9a400", "#8e5bd6", "#d64545", "#14a3a3", "#c2571a", "#6b7280")
CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}.meta{color:#57606a}
table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}code{font:12px ui-monospace,monospace;word-break:break-all}.err{color:#d64545}
.ok{color:#2e9e5b}.failed,.blocked{color:#d64545}svg text{font:12px system-ui,sans-serif}"""


def _e(value: Any) -> str:
    return escape(redact("" if value is None else str(value)))


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows are HTML already (escape cells with _e)."""
    out = "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    out += "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return out + "</table>"


def _link(path: str | None, run_dir: Path, label: str = "") -> str:
    if not path:
        return ""
    p = Path(path)
    href = str(p.relative_to(run_dir)) if p.is_absolute() and p.is_relative_to(run_dir) else p.as_uri() \
        if p.is_absolute() else str(p)
    return f'<a href="{_e(href)}">{_e(label or p.name)}</a>'


def service_intervals(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each service's work per stage from the events: [{stage, service, start, end, state}] (epoch seconds)."""
    open_: dict[tuple[str, str], float] = {}
    stage_start: dict[str, float] = {}
    out: list[dict[str, Any]] = []
    for ev in events:
        kind, t = ev.get("kind"), float(ev.get("t", 0))
        if kind == "stage_started":
            stage_start[ev["stage"]] = t
        elif kind == "service_started":
            open_.setdefault((ev["stage"], ev["service"]), t)
        elif kind == "service_finished":
            key = (ev["stage"], ev["service"])
            start = open_.pop(key, stage_start.get(ev["stage"], t))
            out.append({"stage": key[0], "service": key[1], "start": start, "end": t, "state": ev.get("state")})
    return out


def cache_hits(events: Sequence[dict[str, Any]]) -> int:
    """Services whose work was reused (state cached) in this run."""
    return sum(1 for ev in events if ev.get("kind") == "service_finished" and ev.get("state") == "cached")


def _secs(s: float) -> str:
    return f"{s * 1000:.0f}ms" if s < 1 else f"{s:.1f}s" if s < 120 else f"{int(s // 60)}m{int(s % 60):02d}s"


def timeline_svg(stages: Sequence[dict[str, Any]], intervals: Sequence[dict[str, Any]], width: int = 960,
                 phases: Sequence[dict[str, Any]] = ()) -> str:
    """A Gantt chart: a bar per phase that is not a stage (the pre-flight, provisioning that overlapped the
    stages), a bar per stage that ran or was decided (start = `started`, length = `duration_s`), then a bar per
    service's work under its stage. Times are epoch seconds; the axis is seconds since the first bar."""
    timed = [*(p for p in phases if p.get("started")), *(s for s in stages if s.get("started"))]
    starts = [float(s["started"]) for s in timed] + [float(i["start"]) for i in intervals]
    ends = [float(s["started"]) + float(s.get("duration_s") or 0) for s in timed] + [float(i["end"]) for i in intervals]
    if not starts:
        return "<p class=meta>no timing recorded</p>"
    t0, span = min(starts), max(max(ends) - min(starts), 0.001)
    label_w, row_h, plot_w = 240, 20, width - 240 - 130
    rows: list[str] = []
    y = 24

    def bar(cls: str, label: str, start: float, end: float, state: str, attrs: str) -> None:
        nonlocal y
        x = label_w + (start - t0) / span * plot_w
        w = max(2.0, (end - start) / span * plot_w)
        color = COLOR.get(state, "#6b7280")
        indent, weight = (20, "normal") if cls == "service" else (4, "normal" if cls == "phase" else "bold")
        rows.append(f'<text x="{indent}" y="{y + 14}" font-weight="{weight}">{_e(label)}</text>'
                    f'<rect class="bar {cls}" {attrs} x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                    f'fill="{color}"><title>{_e(label)}: {_e(state)}, {_secs(end - start)}</title></rect>'
                    f'<text x="{x + w + 4:.1f}" y="{y + 14}" fill="#57606a">{_secs(end - start)} {_e(state)}</text>')
        y += row_h

    for p in phases:
        if p.get("started"):
            start = float(p["started"])
            bar("phase", p["name"], start, start + float(p.get("duration_s") or 0), p["status"],
                f'data-phase="{_e(p["name"])}"')
    for s in (s for s in stages if s.get("started")):
        start = float(s["started"])
        bar("stage", s["name"], start, start + float(s.get("duration_s") or 0), s["status"],
            f'data-stage="{_e(s["name"])}"')
        for i in intervals:
            if i["stage"] == s["name"]:
                bar("service", i["service"], i["start"], i["end"], i.get("state") or "",
                    f'data-stage="{_e(i["stage"])}" data-service="{_e(i["service"])}"')
    ticks = "".join(f'<line x1="{label_w + f * plot_w:.1f}" y1="18" x2="{label_w + f * plot_w:.1f}" y2="{y}" '
                    f'stroke="#d0d7de"/><text x="{label_w + f * plot_w:.1f}" y="14" text-anchor="middle">'
                    f'{_secs(f * span)}</text>' for f in (0, 0.25, 0.5, 0.75, 1))
    return (f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 8}" '
            f'role="img" aria-label="timeline">{ticks}{"".join(rows)}</svg>')


VERDICT_COLOR = {"pass": "#2e9e5b", "fail": "#d64545", "no-data": "#9aa3ad", "inconclusive": "#d9a400",
                 "query-error": "#8e5bd6"}




# what a chart's two series are called, per strategy: the version judged and its baseline
SERIES_NAMES = {"canary": ("canary", "stable"), "blue-green": ("new version", "previous version")}


def analysis_svg(step: int, metric: str, points: Sequence[dict[str, Any]], started: float,
                 width: int = 520, height: int = 180, strategy: str = "canary") -> str:
    """One metric's chart for one step: the judged version's value per interval (a dot coloured by its verdict),
    its baseline's (grey) and the threshold it was held to (red, dashed: it moves with the baseline), over
    seconds since the step's analysis started, the two named as `strategy` names them (SERIES_NAMES: a canary and
    the stable version; a blue-green's new and previous versions, whichever colour serves).
    `points`: [{t, canary, baseline, threshold, verdict}] (unix
    seconds; None where there was no sample: drawn as a grey mark on the axis, never as 0; "+Inf" (a quantile
    above the largest finite bucket, analysis.json_value) is drawn on the chart's top edge and named in the tip)."""
    left, right, top, bottom = 56, 24, 26, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for p in points for k in ("canary", "baseline", "threshold")
              if p.get(k) is not None and math.isfinite(v := float(p[k]))]
    y_max = max(values + [0.0]) * 1.15 or 1.0
    t_end = max([float(p["t"]) - started for p in points] + [1.0])

    def x(p: dict[str, Any]) -> float:
        return left + (float(p["t"]) - started) / t_end * plot_w

    def y(v: float) -> float:
        if math.isinf(v):
            v = y_max if v > 0 else 0.0
        return top + plot_h - v / y_max * plot_h

    def line(key: str, attrs: str) -> str:
        runs: list[list[str]] = [[]]
        for p in points:
            if p.get(key) is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(p):.1f},{y(float(p[key])):.1f}")
        return "".join(f'<polyline class="series {key}" points="{" ".join(r)}" fill="none" {attrs}/>'
                       for r in runs if r)

    grid = "".join(f'<line x1="{left}" y1="{y(f * y_max):.1f}" x2="{left + plot_w}" y2="{y(f * y_max):.1f}" '
                   f'stroke="#eaeef2"/><text x="{left - 4}" y="{y(f * y_max) + 4:.1f}" text-anchor="end">'
                   f'{shown_value(f * y_max)}</text>' for f in (0, 0.5, 1))
    axis = "".join(f'<text x="{left + f * plot_w:.1f}" y="{height - 12}" text-anchor="middle">'
                   f'{_secs(f * t_end)}</text>' for f in (0, 0.5, 1))
    judged, base = SERIES_NAMES.get(strategy, SERIES_NAMES["canary"])
    dots = []
    for p in points:
        verdict = str(p.get("verdict") or "")
        shown = {k: "-" if p.get(k) is None else shown_value(float(p[k])) for k in ("canary", "baseline", "threshold")}
        tip = (f"{_secs(float(p['t']) - started)}: {judged} {shown['canary']}, {base} {shown['baseline']}, "
               f"threshold {shown['threshold']}: {verdict}")
        if p.get("canary") is None:
            dots.append(f'<text class="point nodata" data-verdict="{_e(verdict)}" x="{x(p):.1f}" '
                        f'y="{top + plot_h - 3:.1f}" text-anchor="middle" fill="#9aa3ad">×<title>{_e(tip)}</title>'
                        f"</text>")
        else:
            dots.append(f'<circle class="point canary" data-verdict="{_e(verdict)}" cx="{x(p):.1f}" '
                        f'cy="{y(float(p["canary"])):.1f}" r="4" fill="{VERDICT_COLOR.get(verdict, "#6b7280")}">'
                        f"<title>{_e(tip)}</title></circle>")
    legend = (f'<text x="{left}" y="14"><tspan font-weight="bold">{_e(metric)}</tspan>  '
              f'<tspan fill="#3b82c4">● {_e(judged)}</tspan>  <tspan fill="#9aa3ad">— {_e(base)}</tspan>  '
              f'<tspan fill="#d64545">- - threshold</tspan></text>')
    lines = (line("threshold", 'stroke="#d64545" stroke-dasharray="5 3"') + line("baseline", 'stroke="#9aa3ad" '
             'stroke-width="2"') + line("canary", 'stroke="#3b82c4" stroke-width="2"'))
    return (f'<svg class="analysis" data-step="{step}" data-metric="{_e(metric)}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{height}" role="img" aria-label="{_e(metric)}, step {step}">'
            f'{grid}{axis}<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
            f'stroke="#57606a"/>{lines}{"".join(dots)}{legend}</svg>')


def rollout_section(rollout: dict[str, Any]) -> str:
    """The report's section for a progressive rollout: per step (a canary's weight, a blue-green's preview or
    post-promotion analysis: its `title`), its decision and reason, one chart per metric
    (analysis_svg) and its intervals. `rollout`: {strategy, steps: [pipeline.stages.deploy.analysis
    .StepResult.as_dict()]}; "" when it has no step."""
    steps = rollout.get("steps") or []
    if not steps:
        return ""
    out = [f"<h2>Rollout analysis ({_e(rollout.get('strategy'))})</h2>"]
    for st in steps:
        decision = str(st.get("decision") or "running")
        cls = "ok" if decision == "promote-step" else "failed" if decision == "abort" else "meta"
        # a blue-green's analyses carry their own title (preview, post-promotion); a canary's step its weight
        title = _e(st.get("title")) or (f'Step {_e(st.get("step"))} (weight {_e(st.get("weight"))}%, '
                                        f'{_e(st.get("analysis_s"))}s)')
        out.append(f'<h3 class="step" data-step="{_e(st.get("step"))}">{title}: <span class={cls}>{_e(decision)}'
                   f"</span></h3><p class=reason>{_e(st.get('reason'))}</p>")
        intervals = st.get("intervals") or []
        series: dict[str, list[dict[str, Any]]] = {}
        for i in intervals:
            for metric, point in (i.get("points") or {}).items():
                series.setdefault(metric, []).append(point)
        out += [analysis_svg(int(st.get("step") or 0), metric, pts, float(st.get("started") or 0),
                             strategy=str(rollout.get("strategy") or "canary")) for metric, pts in series.items()]
        out.append(_table(("interval", "at", "requests", "outcome", "counts as", "detail"), [
            [_e(i.get("index")), _secs(float(i.get("t") or 0) - float(st.get("started") or 0)), _e(i.get("requests")),
             f'<span style="color:{VERDICT_COLOR.get(str(i.get("outcome")), "#1f2328")}">{_e(i.get("outcome"))}</span>',
             _e(i.get("verdict")), _e(i.get("reason"))] for i in intervals]))
    return "".join(out)


def _findings(report_path: str | None, limit: int = 100) -> list[list[str]]:
    """Vulnerabilities, secrets and misconfigurations of a Trivy JSON report (SchemaVersion 2), worst first."""
    if not report_path or not Path(report_path).is_file():
        return []
    try:
        doc = json.loads(Path(report_path).read_text())
    except ValueError:
        return []
    order = {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2, "LOW": 3, "UNKNOWN": 4}
    found: list[list[str]] = []
    for res in doc.get("Results") or []:
        for v in res.get("Vulnerabilities") or []:
            found.append([v.get("Severity", ""), v.get("VulnerabilityID", ""), v.get("PkgName", ""),
                          f"{v.get('InstalledVersion', '')} → {v.get('FixedVersion') or 'no fix'}"])
        for s in res.get("Secrets") or []:
            found.append([s.get("Severity", ""), s.get("RuleID", "secret"), res.get("Target", ""), s.get("Title", "")])
        for m in res.get("Misconfigurations") or []:
            found.append([m.get("Severity", ""), m.get("ID", ""), res.get("Target", ""), m.get("Title", "")])
    found.sort(key=lambda f: order.get(f[0], 5))
    return found[:limit]


def render_report(data: dict[str, Any], events: Sequence[dict[str, Any]], run_dir: Path) -> str:
    """The run report page from report_data() (pipeline.release.report) and the run's events."""
    v = data.get("version") or {}
    st = data.get("status", "")
    body = [f"<h1>Release <code>{_e(data.get('release_id'))}</code> → {_e(data.get('env'))}: "
            f"<span class={_e(st)}>{_e(st)}</span></h1>",
            f"<p class=meta>version <code>{_e(v.get('version'))}</code>, commit <code>{_e(v.get('short_sha'))}</code>"
            f", branch {_e(v.get('branch'))}, took {float(data.get('duration_s') or 0):.1f}s, run "
            f"<code>{_e(data.get('run_id'))}</code>, finished {_e(data.get('finished'))}, "
            f"cache hits {cache_hits(events)}</p>"]
    if data.get("error"):
        body.append(f"<p class=err><b>error:</b> {_e(data['error'])}</p>")
    body += ["<h2>Timeline</h2>", timeline_svg(data.get("stages") or [], service_intervals(events),
                                                   phases=data.get("phases") or [])]
    body += ["<h2>Stages</h2>", _table(("stage", "result", "duration", "detail"), [
        [_e(s["name"]), f"<span class={_e(s['status'])}>{_e(s['status'])}</span>",
         _secs(float(s["duration_s"])) if "duration_s" in s else "", _e(s.get("detail"))]
        for s in data.get("stages") or []])]
    dep = data.get("deploy") or {}
    if dep.get("revision"):
        prev = dep.get("previous_revision")
        body.append(f"<p>Deploy: Helm revision <b>{_e(dep['revision'])}</b>{f' (previous {_e(prev)})' if prev else ''}"
                    f", {_e(dep.get('detail') or dep.get('status'))}</p>")
    body.append(rollout_section(data.get("rollout") or {}))
    rows = []
    for name, s in (data.get("services") or {}).items():
        counts = s.get("scan_counts") or {}
        logs = run_dir / "logs"
        own = sorted(logs.glob(f"*/{name}.log")) if logs.is_dir() else []
        rows.append([f"<b>{_e(name)}</b>", _e(s.get("build")), f"<code>{_e((s.get('image_id') or '')[7:19])}</code>",
                     _e(", ".join(s.get("tags") or [])), f"{_e(s.get('scan'))} "
                     f"{_e(' '.join(f'{k}:{n}' for k, n in counts.items() if n))}", _e(s.get("push")),
                     f"<code>{_e(s.get('digest'))}</code>", _e(s.get("deploy")),
                     " · ".join(x for x in [_link(s.get("build_log"), run_dir, "build log"),
                                            _link(s.get("scan_report"), run_dir, "scan report"),
                                            _link(s.get("sbom"), run_dir, "SBOM")]
                                + [_link(str(p), run_dir, f"{p.parent.name} log") for p in own] if x)])
    body += ["<h2>Services</h2>", _table(("service", "build", "image", "tags", "scan", "push", "digest", "deploy",
                                         "logs and reports"), rows)]
    checks = [[_e(name), _e(place), _e(c["name"]), "<span class=ok>ok</span>" if c["ok"] else
               f"<span class=failed>failed</span>: expected {_e(c.get('expected'))}, got {_e(c.get('got'))}"]
              for name, s in (data.get("services") or {}).items()
              for place, cs in (s.get("checks") or {}).items() if place != "smoke" for c in cs]
    if checks:
        body += ["<h2>Functional checks after the deploy</h2>", _table(("service", "where", "check", "result"), checks)]
    for name, s in (data.get("services") or {}).items():
        found = _findings(s.get("scan_report"))
        if found:
            body += [f"<h2>Scan findings: {_e(name)}</h2>",
                     _table(("severity", "id", "package / target", "detail"), [[_e(c) for c in f] for f in found])]
    extra = [p for p in ("run.log", "events.jsonl", "trace.otlp.jsonl", "report.json", "report.md")
             if (run_dir / p).exists()]
    body += ["<h2>Files</h2>", "<p>" + " · ".join(_link(str(run_dir / p), run_dir) for p in extra)
             + f' · <a href="../{HISTORY_FILE}">history of {_e(data.get("env"))}</a></p>']
    return _page(f"release {data.get('release_id')} → {data.get('env')}", "".join(body))


def _history_rows(runs_dir: Path, limit: int) -> list[dict[str, Any]]:
    rows = []
    for d in sorted(p for p in runs_dir.iterdir() if (p / "report.json").is_file())[-limit:]:
        try:
            data = json.loads((d / "report.json").read_text())
        except ValueError:
            continue
        rows.append({"dir": d.name, "data": data, "hits": cache_hits(read_events(d))})
    return rows


def render_history(runs_dir: Path, env: str, limit: int = 50) -> str:
    """The history page of an environment: its last `limit` runs, duration per stage (stacked bars), cache hits."""
    rows = _history_rows(runs_dir, limit)
    names: list[str] = []
    for r in rows:
        for s in r["data"].get("stages") or []:
            if s["name"] not in names:
                names.append(s["name"])
    color = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    top = max([sum(float(s.get("duration_s") or 0) for s in r["data"].get("stages") or []) for r in rows] + [0.001])
    bw, h, parts = 24, 200, []
    for i, r in enumerate(rows):
        y = float(h)
        for s in r["data"].get("stages") or []:
            if "duration_s" not in s:   # not run
                continue
            d = float(s["duration_s"]) / top * (h - 10)
            y -= d
            parts.append(f'<rect class="bar run" x="{40 + i * (bw + 6)}" y="{y:.1f}" width="{bw}" height="{d:.1f}" '
                         f'fill="{color[s["name"]]}"><title>{_e(r["dir"])} {_e(s["name"])}: '
                         f'{float(s.get("duration_s") or 0):.1f}s</title></rect>')
    legend = "".join(f'<rect x="{40 + i * 110}" y="{h + 12}" width="10" height="10" fill="{color[n]}"/>'
                     f'<text x="{54 + i * 110}" y="{h + 21}">{_e(n)}</text>' for i, n in enumerate(names))
    svg = (f'<svg id="history" xmlns="http://www.w3.org/2000/svg" '
           f'width="{max(60 + len(names) * 110, 60 + len(rows) * (bw + 6))}" '
           f'height="{h + 30}"><text x="0" y="12">{_secs(top)}</text><line x1="38" y1="{h}" x2="100%" y2="{h}" '
           f'stroke="#d0d7de"/>{"".join(parts)}{legend}</svg>')
    table_rows = []
    for r in reversed(rows):
        d = r["data"]
        by = {s["name"]: s for s in d.get("stages") or []}
        table_rows.append([f'<a href="{_e(r["dir"])}/report.html">{_e(r["dir"])}</a>', _e(d.get("release_id")),
                           f"<span class={_e(d.get('status'))}>{_e(d.get('status'))}</span>",
                           _secs(float(d.get('duration_s') or 0)), str(r["hits"])]
                          + [f"{_secs(float(by[n]['duration_s']))} {_e(by[n].get('status'))}"
                             if "duration_s" in by.get(n, {}) else "" for n in names])
    body = (f"<h1>Runs of {_e(env)}</h1><p class=meta>{len(rows)} run(s); duration per stage over time</p>{svg}"
            + _table(("run", "release", "result", "duration", "cache hits", *names), table_rows))
    return _page(f"runs of {env}", body)


def write_html_report(data: dict[str, Any], run_dir: Path) -> Path:
    """Write `<run_dir>/report.html` and refresh the environment's history page beside the run directories."""
    path = run_dir / "report.html"
    atomic_write(path, render_report(data, read_events(run_dir), run_dir))
    atomic_write(run_dir.parent / HISTORY_FILE, render_history(run_dir.parent, str(data.get("env") or "")))
    return path


def latest_report(state_dir: Path, env: str) -> Path:
    """The newest run's report.html of `env` (`<state_dir>/<env>/runs/<run id>/report.html`, run ids sort by
    time). UsageError when the environment has no HTML report yet."""
    runs = state_dir / env / "runs"
    found = sorted(runs.glob("*/report.html"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise UsageError(f"environment {env} has no HTML run report yet (looked in {runs})",
                         f"run `invoke release --env {env}` first")
    return found[-1]
