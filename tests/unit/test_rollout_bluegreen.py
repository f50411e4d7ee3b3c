"""The blue-green strategy's pure parts (pipeline/stages/deploy/bluegreen.py, the colour helpers of values.py and
drift.py): each phase's layout of the colours, what a rerun does with the recorded state, the keep delay, the
state's round trip, the status line and the report, which Deployment serves, and what other strategies carry."""

from __future__ import annotations

import json

import pytest

from pipeline.release.html_report import rollout_section
from pipeline.stages.deploy import analysis, progressive
from pipeline.stages.deploy.bluegreen import (
    ABORTED,
    ABORTING,
    KEEPING,
    POST,
    POST_STEP,
    PREVIEW,
    PREVIEW_STEP,
    PROMOTED,
    RETIRING,
    SWITCHED_BACK,
    SWITCHING,
    SWITCHING_BACK,
    BlueGreenState,
    base_values,
    carried_layout,
    keep_remaining,
    layout_values,
    resume_plan,
)
from pipeline.stages.deploy.drift import workload_differences
from pipeline.stages.deploy.values import active_colour, colour_deployment, serving_deployment

OLD = "r/veza-docs@sha256:" + "0" * 64
NEW = "r/veza-docs@sha256:" + "1" * 64
OTHER = "r/veza-docs@sha256:" + "2" * 64


def _image(ref: str) -> dict[str, str]:
    repo, _, digest = ref.partition("@")
    return {"repository": repo, "digest": digest, "tag": ""}


def _state(colour: str = "green", phase: str = PREVIEW) -> BlueGreenState:
    return BlueGreenState(new={"veza-docs": NEW}, old={"veza-docs": OLD}, colours={"veza-docs": colour},
                          replicas={"veza-docs": 2}, stable_revision=3, phase=phase,
                          templates={"veza-docs": {"sha256": "ab" * 32, "generation": 2}})


def _result(step: int, decision: str = "") -> analysis.StepResult:
    point = analysis.Point(1000.0, 0.2, 0.0, 0.02, "fail")
    rec = analysis.IntervalRecord(1, 1000.0, 42, "fail", "fail", "error-ratio 0.2 > max 0.05", {"error-ratio": point})
    return analysis.StepResult(step, 0 if step == PREVIEW_STEP else 100, 10, 990.0, decision,
                               "why" if decision else "", [rec])


DEPLOYED = {"global": {"deployHash": "sha256:old"},
            "services": {"veza-docs": {"enabled": True, "replicas": 2, "image": _image(OLD),
                                       "canary": {"enabled": False}},
                         "veza-chat-server": {"enabled": False}}}


@pytest.mark.parametrize(("phase", "active", "image", "standby", "replicas"), [
    (PREVIEW, "blue", OLD, NEW, 2),          # the new colour beside, the old one serving
    (SWITCHING, "green", NEW, OLD, 2),       # the main Service on the new colour, the old one kept at full size
    (ABORTING, "blue", OLD, NEW, 0),         # a failed preview: the new colour at 0
    (SWITCHING_BACK, "blue", OLD, NEW, 0),   # a failed post-promotion analysis: the old colour active again
    (RETIRING, "green", NEW, OLD, 0),        # the old colour at 0
])
def test_each_phase_lays_out_the_colours(phase: str, active: str, image: str, standby: str, replicas: int) -> None:
    values = layout_values(base_values(DEPLOYED), _state("green"), phase)
    svc = values["services"]["veza-docs"]
    assert svc["image"] == _image(image)   # the active colour's version is the service's image
    assert svc["blueGreen"] == {"enabled": True, "active": active,
                                "standby": {"image": _image(standby), "replicas": replicas}}
    assert "canary" not in svc and svc["replicas"] == 2
    assert values["global"] == DEPLOYED["global"] and values["services"]["veza-chat-server"] == {"enabled": False}
    assert DEPLOYED["services"]["veza-docs"]["image"] == _image(OLD)   # the input is not changed


def test_the_old_colour_runs_the_same_image_and_replicas_before_and_after_the_switch() -> None:
    """What keeps its pods: blue serves OLD at 2 replicas in the preview and is the standby with OLD at 2 after
    the switch (the chart renders a colour's pod template from its image alone; test_chart_bluegreen.py)."""
    for colour in ("green", "blue"):
        st = _state(colour)
        preview, switched = (layout_values({}, st, p)["services"]["veza-docs"] for p in (PREVIEW, SWITCHING))
        old = "blue" if colour == "green" else "green"

        def runs(values: dict[str, object], which: str) -> tuple[object, object]:
            bg = values["blueGreen"]
            assert isinstance(bg, dict)
            if bg["active"] == which:
                return values["image"], 2
            return bg["standby"]["image"], bg["standby"]["replicas"]
        assert runs(preview, old) == runs(switched, old) == (_image(OLD), 2)
        assert runs(preview, colour) == runs(switched, colour) == (_image(NEW), 2)


def test_a_phase_without_a_layout_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no layout for phase"):
        layout_values({}, _state(), KEEPING)


@pytest.mark.parametrize(("phase", "wanted", "plan"), [
    (PREVIEW, {"veza-docs": NEW}, "continue"), (POST, {"veza-docs": NEW}, "continue"),
    (KEEPING, {"veza-docs": NEW}, "continue"), (SWITCHING_BACK, {"veza-docs": NEW}, "continue"),
    (PREVIEW, {"veza-docs": OTHER}, "undo"), (ABORTING, {"veza-docs": OTHER}, "undo"),
    (SWITCHING, {"veza-docs": OTHER}, "undo"), (POST, {"veza-docs": OTHER}, "undo"),
    (KEEPING, {"veza-docs": OTHER}, "retire"), (RETIRING, {"veza-docs": OTHER}, "retire"),
    (PROMOTED, {"veza-docs": NEW}, "fresh"), (ABORTED, {"veza-docs": NEW}, "fresh"),
    (SWITCHED_BACK, {"veza-docs": OTHER}, "fresh"),
])
def test_a_rerun_continues_its_own_rollout_and_never_runs_two_previews(phase: str, wanted: dict[str, str],
                                                                       plan: str) -> None:
    assert resume_plan(_state(phase=phase), wanted) == plan
    assert resume_plan(None, wanted) == "fresh"


def test_the_keep_delay_runs_from_the_passed_post_promotion_analysis() -> None:
    st = _state(phase=KEEPING)
    assert keep_remaining(st, 30, 1000.0) == 30.0          # not started: the whole delay
    st.kept_since = 1000.0
    assert keep_remaining(st, 30, 1010.0) == 20.0          # a rerun waits what is left
    assert keep_remaining(st, 30, 1100.0) == 0.0


def test_the_state_reads_back_what_was_written_through_json() -> None:
    st = _state(phase=POST)
    st.kept_since = 0.0
    pre = st.record(PREVIEW_STEP)
    pre.update(title="Preview analysis", load=[{"target": "http://127.0.0.1:1", "requests": 3, "by_status": {}}])
    pre["results"]["veza-docs"] = _result(PREVIEW_STEP, "promote-step").as_dict()
    st.record(POST_STEP)["results"]["veza-docs"] = _result(POST_STEP).as_dict()
    doc = json.loads(json.dumps(st.as_dict()))
    assert doc["strategy"] == "blue-green"
    back = BlueGreenState.from_dict(doc)
    assert back == st
    assert back.results(PREVIEW_STEP)["veza-docs"] == _result(PREVIEW_STEP, "promote-step")
    assert back.results(POST_STEP)["veza-docs"] == _result(POST_STEP)   # what run_step(resume=) continues from
    assert back.record(POST_STEP) is back.analyses[1]


@pytest.mark.parametrize("broken", [
    {}, {**_state().as_dict(), "strategy": "canary"}, {**_state().as_dict(), "phase": "dancing"},
    {**_state().as_dict(), "colours": {"veza-docs": "red"}}, {**_state().as_dict(), "colours": {}},
    {**_state().as_dict(), "replicas": {"veza-docs": "two"}},
    {**_state().as_dict(), "analyses": [{"step": 1, "results": {"veza-docs": {"step": 1}}}]},
])
def test_a_state_of_another_shape_is_a_value_error(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="blue-green"):
        BlueGreenState.from_dict(broken)


def test_status_says_the_phase_which_colour_serves_and_which_previews() -> None:
    st = _state("green", PREVIEW)
    st.record(PREVIEW_STEP)["results"]["veza-docs"] = _result(PREVIEW_STEP).as_dict()
    line = st.status_line()
    assert line.startswith("blue-green in progress: analysing the preview (veza-docs: blue serves, green previews")
    assert "1 interval(s) judged" in line and "sha256:111111111111" in line
    assert st.active() == {"veza-docs": "blue"}
    st.phase = POST
    assert "post-promotion analysis (veza-docs: green serves the new version, blue kept)" in st.status_line()
    assert st.active() == {"veza-docs": "green"}
    st.phase, st.reason = SWITCHED_BACK, "post-promotion analysis, interval 1/2: error-ratio 0.2 > max 0.05"
    assert st.status_line() == ("blue-green: switched-back (veza-docs: blue serves, green at 0): post-promotion "
                                "analysis, interval 1/2: error-ratio 0.2 > max 0.05")
    st.phase, st.reason = PROMOTED, ""
    assert st.status_line() == "blue-green: promoted (veza-docs: green serves the new version, blue at 0)"


def test_the_report_draws_each_analysis_under_its_own_title() -> None:
    st = _state("green", SWITCHED_BACK)
    pre = st.record(PREVIEW_STEP)
    pre["title"] = "Preview analysis (green on its preview Service, 10s)"
    pre["results"]["veza-docs"] = _result(PREVIEW_STEP, "promote-step").as_dict()
    post = st.record(POST_STEP)
    post["title"] = "Post-promotion analysis (green serving, 10s)"
    post["results"]["veza-docs"] = _result(POST_STEP, "abort").as_dict()
    report = st.report()
    assert report["strategy"] == "blue-green" and report["active"] == {"veza-docs": "blue"}
    assert [s["title"] for s in report["steps"]] == [pre["title"], post["title"]]
    html = rollout_section(report)
    assert "Rollout analysis (blue-green)" in html
    assert "Preview analysis (green on its preview Service, 10s): <span class=ok>promote-step" in html
    assert "Post-promotion analysis (green serving, 10s): <span class=failed>abort" in html
    assert html.count('<svg class="analysis"') == 2


def _deployment(name: str, image: str, *, role: str = "", replicas: int = 1) -> dict[str, object]:
    labels = {"veza.io/role": role} if role else {}
    return {"metadata": {"name": name, "labels": labels, "generation": 1},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"image": image}]}}},
            "status": {"updatedReplicas": replicas, "readyReplicas": replicas, "observedGeneration": 1}}


def test_the_serving_deployment_is_the_active_colour() -> None:
    assert colour_deployment("veza", "veza-docs", "blue") == "veza-docs"
    assert colour_deployment("veza", "docs", "green") == "veza-docs-green"
    plain = {"veza-docs": _deployment("veza-docs", OLD)}
    assert serving_deployment("veza", "veza-docs", plain) == "veza-docs"
    green = {"veza-docs": _deployment("veza-docs", OLD, role="standby", replicas=0),
             "veza-docs-green": _deployment("veza-docs-green", NEW, role="active")}
    assert serving_deployment("veza", "veza-docs", green) == "veza-docs-green"
    # drift: green serves NEW, Ready; blue at 0 is not a difference
    assert workload_differences("veza", {"veza-docs": NEW}, green) == []
    assert [d.line() for d in workload_differences("veza", {"veza-docs": OLD}, green)] == [
        f"veza-docs: expected {OLD.partition('@')[2]}, running {NEW.partition('@')[2]}"]
    green["veza-docs-green"]["metadata"]["labels"] = {"veza.io/role": "standby"}   # type: ignore[index]
    assert serving_deployment("veza", "veza-docs", green) == "veza-docs"


def test_an_upgrade_of_any_strategy_keeps_a_serving_green_and_drops_a_blue_layout() -> None:
    green = {"services": {"veza-docs": {"image": _image(NEW), "blueGreen": {
        "enabled": True, "active": "green", "standby": {"image": _image(OLD), "replicas": 2}}},
        "veza-chat-server": {"enabled": False}}}
    assert active_colour(green, "veza-docs") == "green" and active_colour(green, "veza-chat-server") == "blue"
    assert carried_layout(green) == {"services": {"veza-docs": {"blueGreen": {
        "enabled": True, "active": "green", "standby": {"image": _image(OLD), "replicas": 0}}}}}
    blue = json.loads(json.dumps(green))
    blue["services"]["veza-docs"]["blueGreen"]["active"] = "blue"
    assert carried_layout(blue) == {} and carried_layout(None) == {} and carried_layout(DEPLOYED) == {}


@pytest.mark.parametrize(("doc", "foreign"), [
    ({"strategy": "canary", "phase": "step"}, True), ({"phase": "aborting"}, True),   # an older canary: no key
    ({"strategy": "canary", "phase": "promoted"}, False), ({"strategy": "blue-green", "phase": "preview"}, False),
])
def test_another_strategys_rollout_in_progress_stops_a_deploy(doc: dict[str, object], foreign: bool) -> None:
    from types import SimpleNamespace

    rt = SimpleNamespace(release="veza", namespace="veza-dev")
    line = progressive.foreign_rollout(rt, doc, "blue-green")  # type: ignore[arg-type]
    assert (line is not None) == foreign
    if line:
        assert "is in progress" in line and 'strategy = "canary"' in line


def test_only_changed_services_without_a_volume_get_a_second_version_and_the_note_is_said_once() -> None:
    from pipeline.stages.deploy.progressive import second_version_choices
    from pipeline.stages.deploy.values import ImageChoice

    def choice(name: str, digest: str, source: str = "manifest") -> ImageChoice:
        return ImageChoice(name, f"r/{name}", digest, source)

    choices = {"docs": choice("docs", "sha256:2"), "api": choice("api", "sha256:1"),
               "stream": choice("stream", "sha256:9"), "chat": choice("chat", "sha256:7", "deployed"),
               "new": choice("new", "sha256:5")}
    serving = {"docs": "r/docs@sha256:1", "api": "r/api@sha256:1", "stream": "r/stream@sha256:1",
               "chat": "r/chat@sha256:1"}   # "new" serves nothing yet: no version to run beside
    merged = {"services": {"stream": {"persistence": {"enabled": True}}}}
    notes: list[str] = []
    for _ in range(2):   # a resumed run asks twice
        assert list(second_version_choices(choices, serving, merged, notes, "applied last")) == ["docs"]
    assert notes == ["stream: has a persistent volume, applied last"]
