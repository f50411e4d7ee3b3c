"""The HTML report's sections from report data (pure: no browser; the Chromium test renders a real run)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.release.html_report import render_history, render_report, service_intervals, timeline_svg


def _data(run_dir: Path, report: Path) -> dict[str, object]:
    return {
        "run_id": run_dir.name, "release_id": "local-abc", "env": "local", "status": "ok", "duration_s": 12.0,
        "finished": "2026-11-29T00:00:00Z", "version": {"version": "0.1.0", "short_sha": "abc"},
        "stages": [{"name": "build", "status": "ok", "duration_s": 10.0, "started": 1000.0, "detail": "1 built"},
                   {"name": "deploy", "status": "ok", "duration_s": 2.0, "started": 1010.0, "detail": "deployed"},
                   {"name": "verify", "status": "not run"}],
        "services": {"api": {"repository": "r/api", "tags": ["sha-abc"], "build": "built",
                             "image_id": "sha256:0123456789abcdef", "digest": "sha256:" + "d" * 64, "push": "pushed",
                             "scan": "pass", "scan_counts": {"HIGH": 1}, "scan_report": str(report),
                             "deploy": "deployed", "build_log": str(run_dir / "build" / "api.log")}},
        "deploy": {"status": "ok", "revision": 7, "previous_revision": 6, "detail": "deployed, revision 7"},
    }


def test_the_report_names_digests_tags_findings_the_deploy_revision_and_links_the_logs(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    report = tmp_path / "trivy.json"
    report.write_text(json.dumps({"SchemaVersion": 2, "Results": [{"Target": "img", "Vulnerabilities": [
        {"VulnerabilityID": "CVE-2026-0001", "PkgName": "bash", "InstalledVersion": "5.2.15-2",
         "FixedVersion": "5.2.15-3", "Severity": "HIGH"}]}]}))
    html = render_report(_data(run_dir, report), [], run_dir)
    assert "Helm revision <b>7</b> (previous 6)" in html
    assert "sha256:" + "d" * 64 in html and "sha-abc" in html and "0123456789ab" in html
    assert "CVE-2026-0001" in html and "5.2.15-2 → 5.2.15-3" in html
    assert '<a href="build/api.log">build log</a>' in html            # relative to the run directory
    assert '<a href="../index.html">history of local</a>' in html
    assert html.count('class="bar stage"') == 2                        # verify did not run: no bar
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_service_intervals_pair_each_services_start_and_end_within_its_stage() -> None:
    events = [{"t": 1.0, "kind": "stage_started", "stage": "build"},
              {"t": 1.5, "kind": "service_started", "stage": "build", "service": "a"},
              {"t": 2.0, "kind": "service_finished", "stage": "build", "service": "b", "state": "cached"},
              {"t": 4.0, "kind": "service_finished", "stage": "build", "service": "a", "state": "done"}]
    got = service_intervals(events)
    assert got == [{"stage": "build", "service": "b", "start": 1.0, "end": 2.0, "state": "cached"},
                   {"stage": "build", "service": "a", "start": 1.5, "end": 4.0, "state": "done"}]
    svg = timeline_svg([{"name": "build", "status": "ok", "started": 1.0, "duration_s": 3.0}], got)
    assert svg.count('class="bar service"') == 2 and svg.count('class="bar stage"') == 1


def test_the_history_lists_every_run_newest_first_with_its_cache_hits(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for i, hits in enumerate((0, 3)):
        d = runs / f"2026112{i}t000000-aaaaaa"
        d.mkdir(parents=True)
        (d / "report.json").write_text(json.dumps({"release_id": f"local-{i}", "status": "ok", "duration_s": 5,
                                                   "stages": [{"name": "build", "status": "ok", "duration_s": 5}]}))
        (d / "events.jsonl").write_text("".join(json.dumps({"t": 1, "kind": "service_finished", "stage": "build",
                                                           "service": f"s{k}", "state": "cached"}) + "\n"
                                                for k in range(hits)))
    html = render_history(runs, "local")
    table = html[html.index("<table"):]
    assert table.index("20261121t000000") < table.index("20261120t000000")   # newest first in the table
    assert "<td>3</td>" in html and html.count('class="bar run"') == 2
