"""The HTML report's rollout section (pipeline/release/html_report.py) from a step judged by the analysis engine:
a chart per metric per step whose dots sit above the threshold line exactly when they failed, gaps for no data,
the decision with its reason, the intervals."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.release.html_report import analysis_svg, render_report, rollout_section
from tests.unit.test_rollout_analysis_step import ROLLOUT, const, healthy, run

SVG = "{http://www.w3.org/2000/svg}"


def _step(failure_limit: int = 5, **over: object) -> dict[str, Any]:
    """A step of 4 intervals whose canary error ratio climbs 0.012, (no sample), 0.036, 0.048 over a stable 0."""
    answers = healthy(**{"error-ratio__canary": lambda i: (None if i == 2 else 0.012 * i)}, **over)  # type: ignore[arg-type]
    rollout = replace(ROLLOUT, no_data="pass", failure_limit=failure_limit,
                      steps=(replace(ROLLOUT.steps[0], analysis_s=40),))
    result, _, _ = run(answers, rollout)
    return result.as_dict()


def _threshold_y(svg: ET.Element, x: float) -> float:
    for line in svg.iter(f"{SVG}polyline"):
        if "threshold" in line.get("class", ""):
            for pair in (line.get("points") or "").split():
                px, py = map(float, pair.split(","))
                if abs(px - x) < 0.05:
                    return py
    raise AssertionError(f"no threshold point at x={x}")


def test_each_metric_s_chart_puts_failed_values_above_its_threshold_and_leaves_no_data_out() -> None:
    step = _step()
    points = [i["points"]["error-ratio"] for i in step["intervals"]]
    assert [p["verdict"] for p in points] == ["pass", "no-data", "fail", "fail"]
    # the line stays the bound the canary is held to (stable 0 + margin 0.02), no-data interval included
    assert [p["threshold"] for p in points] == [pytest.approx(0.02)] * 4
    svg = ET.fromstring(analysis_svg(1, "error-ratio", points, float(step["started"])))
    assert (svg.get("class"), svg.get("data-step"), svg.get("data-metric")) == ("analysis", "1", "error-ratio")
    dots = [c for c in svg.iter(f"{SVG}circle") if "canary" in c.get("class", "")]
    assert [d.get("data-verdict") for d in dots] == ["pass", "fail", "fail"]
    for dot in dots:   # SVG y grows downwards: above the line is a smaller y
        above = float(dot.get("cy", "0")) < _threshold_y(svg, float(dot.get("cx", "0")))
        assert above is (dot.get("data-verdict") == "fail"), ET.tostring(dot)
    canary_lines = [p for p in svg.iter(f"{SVG}polyline") if p.get("class") == "series canary"]
    assert [len((p.get("points") or "").split()) for p in canary_lines] == [1, 2]   # broken at the gap, not 0
    nodata = [t for t in svg.iter(f"{SVG}text") if "nodata" in t.get("class", "")]
    assert len(nodata) == 1 and nodata[0].get("data-verdict") == "no-data"
    assert [float(d.get("cx", "0")) for d in dots] == sorted(float(d.get("cx", "0")) for d in dots)


def test_the_report_shows_each_step_s_decision_with_its_reason_and_its_intervals(tmp_path: Path) -> None:
    aborted = _step(failure_limit=0, p95__canary=const(0.9))
    data = {"run_id": "r1", "release_id": "staging-abc", "env": "staging", "status": "failed",
            "rollout": {"strategy": "canary", "steps": [aborted]}}
    html = render_report(data, [], tmp_path)
    assert "Rollout analysis (canary)" in html and html.count('<svg class="analysis"') == 2
    assert 'data-step="1" data-metric="p95"' in html and 'data-metric="error-ratio"' in html
    assert '<span class=failed>abort</span>' in html
    assert "p95 0.9 &gt; max 0.5" in html and str(aborted["reason"]).replace(">", "&gt;") in html
    assert len(aborted["intervals"]) == 1 and "<td>1</td>" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert rollout_section({"strategy": "canary", "steps": []}) == ""


def test_an_infinite_p95_is_drawn_on_the_chart_s_top_edge_and_named_in_its_tip() -> None:
    """A +Inf quantile (written "+Inf" in the JSON) neither stretches the axis to infinity nor disappears."""
    step = run(healthy(p95__canary=const(float("inf"))))[0].as_dict()
    points = [i["points"]["p95"] for i in step["intervals"]]
    assert points[0]["canary"] == "+Inf"
    svg = ET.fromstring(analysis_svg(1, "p95", points, float(step["started"])))
    dots = list(svg.iter(f"{SVG}circle"))
    assert len(dots) == 1 and dots[0].get("data-verdict") == "fail"
    top = 26   # analysis_svg's top margin
    assert float(dots[0].get("cy") or "nan") == pytest.approx(top)
    assert "canary +Inf" in (dots[0].findtext(f"{SVG}title") or "")
    assert all("inf" not in (el.get("points") or "") + (el.get("cy") or "") for el in svg.iter())


@pytest.mark.parametrize(("strategy", "judged", "base"), [("canary", "canary", "stable"),
                                                          ("blue-green", "new version", "previous version")])
def test_a_chart_names_its_series_as_the_strategy_does(strategy: str, judged: str, base: str) -> None:
    """A blue-green's charts compare the new version with the previous one (the preview with the serving colour,
    then the promoted colour with the one kept): no "canary" or "stable" in their legend or tips."""
    step = _step()
    html = rollout_section({"strategy": strategy, "steps": [step]})
    svg = ET.fromstring(html[html.index("<svg"):html.index("</svg>") + 6])
    legend = "".join(svg.itertext())
    tips = [t.text or "" for t in svg.iter(f"{SVG}title")]
    assert f"● {judged}" in legend and f"— {base}" in legend
    assert tips and all(t.split(": ", 1)[1].startswith(f"{judged} ") and f", {base} " in t for t in tips), tips
    if strategy == "blue-green":
        assert "canary" not in legend + "".join(tips) and "stable" not in legend + "".join(tips)
