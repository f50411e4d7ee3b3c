"""The canary strategy's pure parts (pipeline/stages/deploy/canary.py): the replica ratio that achieves a step's
weight beside the stable replicas (reported as achieved), the rollout state written to and read back from the
cluster, the values of a step and of the stable version alone, and `invoke status`'s line."""

from __future__ import annotations

import json
from itertools import product

import pytest

from pipeline.stages.deploy import analysis
from pipeline.stages.deploy.canary import (
    ABORTED,
    STEP,
    CanaryState,
    achieved_line,
    canary_replicas,
    stable_values,
    step_values,
    template_fingerprint,
)
from pipeline.stages.deploy.values import ImageChoice


@pytest.mark.parametrize(("weight", "stable", "canary"), [
    (25, 1, 1), (50, 1, 1), (75, 1, 3), (10, 1, 1), (25, 3, 1), (50, 3, 3), (20, 4, 1), (34, 2, 1), (40, 3, 2),
    (90, 1, 9), (99, 2, 198), (1, 5, 1)])
def test_the_canary_replicas_come_closest_to_the_weight(weight: int, stable: int, canary: int) -> None:
    assert canary_replicas(weight, stable, 1000) == canary


@pytest.mark.parametrize(("weight", "stable", "limit", "canary"), [
    (90, 1, 4, 4), (99, 2, 4, 4), (75, 1, 3, 3), (75, 1, 2, 2), (50, 3, 4, 3), (25, 1, 1, 1)])
def test_the_canary_replicas_are_bounded_by_max_canary_replicas(weight: int, stable: int, limit: int,
                                                                canary: int) -> None:
    assert canary_replicas(weight, stable, limit) == canary


def test_no_other_count_is_closer_and_the_stable_replicas_are_kept() -> None:
    for weight, stable in product(range(1, 100), range(1, 8)):
        c = canary_replicas(weight, stable, 1000)
        assert c >= 1
        best = min(abs(n / (stable + n) - weight / 100) for n in range(1, 1000))
        assert abs(c / (stable + c) - weight / 100) == pytest.approx(best), (weight, stable, c)


@pytest.mark.parametrize(("weight", "stable", "limit"), [(0, 1, 4), (100, 1, 4), (25, 0, 4), (25, 1, 0)])
def test_a_weight_it_cannot_achieve_is_an_error(weight: int, stable: int, limit: int) -> None:
    with pytest.raises(ValueError):
        canary_replicas(weight, stable, limit)


def test_the_weight_is_reported_as_achieved_not_as_asked() -> None:
    assert achieved_line(25, 1, 3, 4) == "asked 25%, achieved 1/4 = 25%"
    assert achieved_line(25, 1, 1, 4) == "asked 25%, achieved 1/2 = 50%"
    assert achieved_line(40, 2, 3, 4) == "asked 40%, achieved 2/5 = 40%"
    # 90% beside 1 stable pod asks 9: the bound gives 4, and the line says so
    assert achieved_line(90, 4, 1, 4) == "asked 90%, achieved 4/5 = 80%, bounded by max_canary_replicas = 4"
    assert achieved_line(75, 3, 1, 3) == "asked 75%, achieved 3/4 = 75%"   # at the bound, not held by it


def _result(step: int, decision: str = "") -> analysis.StepResult:
    point = analysis.Point(1000.0, 0.2, 0.0, 0.02, "fail")
    rec = analysis.IntervalRecord(1, 1000.0, 42, "fail", "fail", "error-ratio 0.2 > max 0.05", {"error-ratio": point})
    return analysis.StepResult(step, 25, 30, 990.0, decision, "why" if decision else "", [rec])


def _state() -> CanaryState:
    st = CanaryState(canary={"veza-docs": "r/veza-docs@sha256:" + "1" * 64},
                     stable={"veza-docs": "r/veza-docs@sha256:" + "0" * 64}, stable_revision=3,
                     templates={"veza-docs": {"sha256": "ab" * 32, "generation": 2}}, step=1)
    rec = st.step_record(1)
    rec.update(weight=25, replicas={"veza-docs": [1, 1]}, achieved={"veza-docs": achieved_line(25, 1, 1, 4)})
    rec["results"]["veza-docs"] = _result(1).as_dict()
    return st


def test_the_state_reads_back_what_was_written_through_json() -> None:
    st = _state()
    back = CanaryState.from_dict(json.loads(json.dumps(st.as_dict())))
    assert back == st
    assert back.results(1)["veza-docs"] == _result(1)   # what run_step(resume=) continues from
    assert back.results(2) == {}


@pytest.mark.parametrize("broken", [
    {}, {"canary": {}, "stable": {}, "stable_revision": "x", "phase": STEP, "step": 1, "steps": []},
    {"canary": {}, "stable": {}, "stable_revision": 1, "phase": "dancing", "step": 1, "steps": []},
    {"canary": {}, "stable": {}, "stable_revision": 1, "phase": STEP, "step": 1,
     "steps": [{"step": 1, "results": {"a": {"step": 1}}}]},
    {"canary": [], "stable": {}, "stable_revision": 1, "phase": STEP, "step": 1, "steps": []},
])
def test_a_state_of_another_shape_is_a_value_error(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a canary rollout state|unknown canary phase"):
        CanaryState.from_dict(broken)


def test_status_and_report_show_the_step_the_weight_achieved_and_the_intervals() -> None:
    st = _state()
    line = st.status_line()
    assert "canary in progress: analysing at step 1" in line and "achieved 1/2 = 50%" in line
    assert "1 interval(s) judged" in line
    report = st.report()
    assert report["strategy"] == "canary" and report["steps"][0]["service"] == "veza-docs"
    assert report["steps"][0]["intervals"][0]["points"]["error-ratio"]["canary"] == 0.2
    st.phase, st.reason = ABORTED, "step 1: error-ratio 0.2 > max 0.05"
    assert st.status_line() == "canary: aborted (step 1: error-ratio 0.2 > max 0.05)"


def test_a_step_adds_the_canary_to_the_stable_values_and_the_abort_removes_it() -> None:
    deployed = {"global": {"deployHash": "sha256:old"},
                "services": {"veza-docs": {"enabled": True, "image": {"repository": "r", "digest": "sha256:0"}},
                             "veza-chat-server": {"enabled": False}}}
    new = ImageChoice("veza-docs", "r", "sha256:1", "manifest")
    step = step_values(deployed, {"veza-docs": (new, 2)})
    assert step["services"]["veza-docs"]["canary"] == {
        "enabled": True, "replicas": 2, "image": {"repository": "r", "digest": "sha256:1", "tag": ""}}
    assert step["services"]["veza-docs"]["image"] == deployed["services"]["veza-docs"]["image"]   # stable kept
    assert step["global"] == deployed["global"] and "canary" not in deployed["services"]["veza-docs"]
    assert stable_values(step) == deployed


def test_the_template_fingerprint_sees_any_change_of_the_pod_template_or_a_roll() -> None:
    dep = {"metadata": {"generation": 4}, "spec": {"template": {"spec": {"containers": [{"image": "a"}]}}}}
    fp = template_fingerprint(dep)
    assert template_fingerprint(json.loads(json.dumps(dep))) == fp
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "b"
    assert template_fingerprint(dep)["sha256"] != fp["sha256"]
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "a"
    dep["metadata"]["generation"] = 5
    assert template_fingerprint(dep) != fp
