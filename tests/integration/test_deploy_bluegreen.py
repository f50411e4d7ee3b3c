"""The blue-green strategy on the real local cluster, judged by a real Prometheus (Debian's 2.42, started by the test
on 127.0.0.1:21000-21049) scraping both colours' pods (file_sd targets from the pods, rollout_support.PodTargets).

veza-docs only (no infra), in a namespace veza-bg-*; four builds of it from the project's Dockerfile, pushed to the
machine's registry as 127.0.0.1:5000/veza-bg-test/veza-docs (stable, good: VERSION build args differ, so do the
digests; late-bad: a copy of services/docs in the test's tmp dir whose "/" answers 500 on every second request once
it has served LATE_AFTER of them, so it passes the preview's analysis and fails once it serves; nothing in the
project knows of it), removed from the engine at the end. The tests build on each other in file order:
1. a first install (all at once), then the good build: blue serves, green previews and passes, the switch, the
   post-promotion analysis passes, blue is kept keep_old_s then scaled to 0; one Helm revision per step;
2. the late-bad build goes to blue (green serves now): its preview passes, the switch, the post-promotion analysis
   fails: switched back (exit 5), green's pods never restarted and answering throughout, blue at 0;
3. a good build's deploy killed with SIGKILL during its preview analysis, then rerun: the preview continues from
   the state in the cluster (its first interval kept), then switch, post-promotion, retire: one outcome, one
   preview at most at any time, `invoke status` green.
Port-forwards 127.0.0.1:21050-21079 (the killed deploy's: 21080-21099)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.config_rollout import DEFAULT_METRICS, Load, Rollout
from pipeline.core.errors import DeployFailed
from pipeline.core.manifest import Manifest
from pipeline.core.paths import ROOT
from pipeline.release.html_report import rollout_section
from pipeline.stages.deploy import analysis, bluegreen, deploy_release, progressive
from pipeline.stages.deploy.commands import status_report
from pipeline.stages.deploy.load import LoadLoop
from pipeline.tools import helm, kubectl
from pipeline.tools.kubectl import KubeTarget
from tests.e2e.release_support import remove_release
from tests.integration.deploy_support import (
    LinesReporter,
    kc,
    sh,
    wait_for,
)
from tests.integration.prometheus_support import running_prometheus
from tests.integration.rollout_support import (
    SCRAPE,
    SERVICE,
    PodTargets,
    RolloutTarget,
    build_docs,
    faulty_docs,
    health_answers,
    rollout_config,
    sd_dir,
    start_killable_deploy,
)
from tests.ports import first_free

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.cluster_parallel,
              pytest.mark.slow]

REPO = "127.0.0.1:5000/veza-bg-test/veza-docs"
PF_PORTS, KILLED_PF_PORTS = "21050-21079", "21080-21099"
# The preview sends about (window + preview_analysis_s) × rps = 165 requests to the new version (measured: 166); the
# late-bad build starts failing after that, within the post-promotion analysis's first window (requests 40-120).
LATE_AFTER = 200


def fault(after: int) -> str:
    """services/docs/main.go's "/" handler answering 500 to every second request after the first `after`."""
    return f"""	var served atomic.Uint64
	s.Handle("/", func(w http.ResponseWriter, r *http.Request) {{
		if n := served.Add(1); n > {after} && n%2 == 0 {{
			http.Error(w, "injected by the blue-green test", http.StatusInternalServerError)
			return
		}}
"""


def bg_rollout(prometheus: str) -> Rollout:
    """Short windows (scrape 1 s, window 8 s, interval 4 s): the preview judged twice, the post-promotion analysis
    once, on the default metrics (error ratio, p95 latency against the old version), the old colour kept 2 s."""
    return Rollout(strategy="blue-green", interval_s=4, window="8s", min_requests=5, prometheus=prometheus,
                   metrics=DEFAULT_METRICS, load=Load(rps=10, paths=("/",), max_requests=2000),
                   preview_analysis_s=8, post_promotion_analysis_s=4, keep_old_s=2)


def target_config(namespace: str, state: Path, prometheus: str) -> Config:
    return rollout_config(namespace, state, bg_rollout(prometheus))


@dataclasses.dataclass
class BlueGreen(RolloutTarget):
    repository: ClassVar[str] = REPO

    def get(self, kind: str) -> dict[str, dict[str, Any]]:
        data = json.loads(kc(self.kubeconfig, "-n", self.namespace, "get", kind, "-o", "json"))
        return {d["metadata"]["name"]: d for d in data["items"]}

    def pods(self, track: str) -> set[str]:
        data = json.loads(kc(self.kubeconfig, "-n", self.namespace, "get", "pods", "-l", f"veza.io/track={track}",
                             "-o", "json"))
        return {p["metadata"]["name"] for p in data["items"] if not p["metadata"].get("deletionTimestamp")}

    def revision(self) -> int:
        """The release's latest revision number (its history keeps only the last --history-max of them)."""
        status = helm.status(self.rt.kube, "veza")
        return status.revision if status is not None else 0

    def state_now(self) -> bluegreen.BlueGreenState | None:
        return bluegreen.read_state(self.rt)


def _image(dep: dict[str, Any]) -> str:
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


@pytest.fixture(scope="module")
def target(local_cluster: Path, machine_registry: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlueGreen]:
    assert REPO.startswith(machine_registry + "/")
    old = os.environ.get(kubectl.PORT_RANGE_ENV)
    os.environ[kubectl.PORT_RANGE_ENV] = PF_PORTS
    tmp = tmp_path_factory.mktemp("bluegreen")
    base = load_config(ROOT / "pipeline.toml", check_files=False)
    t0 = time.monotonic()
    run = "g" + uuid.uuid4().hex[:8]
    context = base.service(SERVICE).context
    digests = {"stable": build_docs(base, REPO, run, "stable", context, "bg-stable"),
               "good": build_docs(base, REPO, run, "good", context, "bg-good"),
               "good2": build_docs(base, REPO, run, "good2", context, "bg-good2"),
               "late-bad": build_docs(base, REPO, run, "late-bad",
                                      faulty_docs(base, tmp / "docs-late-bad", fault(LATE_AFTER)), "bg-late-bad"),
               "bad": build_docs(base, REPO, run, "bad", faulty_docs(base, tmp / "docs-bad", fault(0)), "bg-bad")}
    print(f"five builds of {SERVICE} pushed in {time.monotonic() - t0:.0f}s")
    ns = f"veza-bg-{uuid.uuid4().hex[:6]}"
    kc(local_cluster, "create", "namespace", ns)
    kc(local_cluster, "label", "namespace", ns, "veza.pipeline.test=deploy")
    sd = sd_dir(tmp)
    sync = PodTargets(local_cluster, ns, sd, int(base.service(SERVICE).port))
    sync.start()
    try:
        with running_prometheus(SCRAPE, tmp, first_free(range(21000, 21050)), sd_dir=sd) as url:
            yield BlueGreen(target_config(ns, tmp / "state", url), local_cluster, ns, tmp / "state", url, digests)
    finally:
        sync.halt.set()
        sync.join(timeout=30)
        remove_release(local_cluster, ns)   # waited: the images below are in use until its pods are gone
        for image in set(sh("docker", "images", "-q", REPO, check=False).split()):
            sh("docker", "rmi", image, check=False)
        if old is None:
            os.environ.pop(kubectl.PORT_RANGE_ENV, None)
        else:
            os.environ[kubectl.PORT_RANGE_ENV] = old


def _passed(state: bluegreen.BlueGreenState, step: int) -> None:
    result = state.results(step)[SERVICE]
    intervals = 2 if step == bluegreen.PREVIEW_STEP else 1   # analysis_s / interval_s
    assert result.decision == "promote-step" and len(result.intervals) == intervals, result.reason
    assert all(i.requests and i.requests >= 5 for i in result.intervals)   # judged on traffic, not on silence


def test_a_good_build_is_previewed_switched_judged_and_the_old_colour_retired(target: BlueGreen) -> None:
    t0 = time.monotonic()
    first = LinesReporter()
    target.deploy("stable", first)
    assert "first install" in first.text
    blue_pods = target.pods("stable")
    assert target.revision() == 1
    out = LinesReporter()
    m = target.deploy("good", out)
    state = target.state_now()
    assert state is not None and state.phase == bluegreen.PROMOTED, out.text
    assert state.colours == {SERVICE: "green"}
    _passed(state, bluegreen.PREVIEW_STEP)
    _passed(state, bluegreen.POST_STEP)
    for rec in state.analyses:   # load on the new and on the old version, through their two Services
        assert len(rec["load"]) == 2 and all(x["requests"] > 0 and set(x["by_status"]) == {"200"}
                                             for x in rec["load"]), rec["load"]
    assert "svc/veza-docs-preview selects green" in out.text and "keeping the old colour" in out.text
    # preview, switch, retire: one revision each, the last the deploy's ordinary upgrade
    assert target.revision() == 4
    deps = target.get("deployments")
    assert set(deps) == {"veza-docs", "veza-docs-green"}
    assert _image(deps["veza-docs-green"]) == f"{REPO}@{target.digests['good']}"
    assert deps["veza-docs-green"]["metadata"]["labels"]["veza.io/role"] == "active"
    assert deps["veza-docs"]["spec"]["replicas"] == 0 and _image(deps["veza-docs"]).endswith(target.digests["stable"])
    services = target.get("services")
    assert services["veza-docs"]["spec"]["selector"]["veza.io/track"] == "green"
    assert services["veza-docs-preview"]["spec"]["selector"]["veza.io/track"] == "stable"
    assert blue_pods and target.pods("stable") == set()   # blue's pods gone with the retire revision
    rec = m.data["rollout"]
    assert rec["strategy"] == "blue-green" and rec["phase"] == "promoted"
    html = rollout_section(rec)
    assert "Preview analysis (green on its preview Service, 8s): <span class=ok>promote-step" in html
    assert "Post-promotion analysis (green serving, 4s): <span class=ok>promote-step" in html
    status = LinesReporter()
    info = status_report(target.cfg, target.env, m, status, kubeconfig=target.kubeconfig)   # exit 7 on any drift
    assert info["differences"] == [], status.text
    assert info["blue_green"].startswith("blue-green: promoted (veza-docs: green serves the new version, blue at 0)")
    assert info["services"][SERVICE]["digest"] == target.digests["good"]
    print(f"first install and a promoted blue-green: {time.monotonic() - t0:.0f}s")


def test_a_build_failing_once_it_serves_is_switched_back_and_the_old_colour_never_moves(target: BlueGreen) -> None:
    t0 = time.monotonic()
    before = target.get("deployments")["veza-docs-green"]
    green_pods = target.pods("green")
    out = LinesReporter()
    # one of green's pods (the old version now), asked through the whole rollout
    with health_answers(target, f"pod/{sorted(green_pods)[0]}") as answers, pytest.raises(DeployFailed) as info:
        target.deploy("late-bad", out)
    assert info.value.exit_code == 5 and "blue-green of local switched back" in info.value.message, out.text
    assert "post-promotion analysis" in info.value.message and "error-ratio" in info.value.message
    assert "old colour untouched" in info.value.message
    state = target.state_now()
    assert state is not None and state.phase == bluegreen.SWITCHED_BACK and state.decision == "switch-back"
    assert state.colours == {SERVICE: "blue"}   # the new version went to blue: green served
    _passed(state, bluegreen.PREVIEW_STEP)      # it answered well while only previewed
    post = state.results(bluegreen.POST_STEP)[SERVICE]
    assert post.decision == "abort" and len(post.intervals) == 1, post.reason
    served = next(x for x in state.record(bluegreen.POST_STEP)["load"] if x["by_status"].get("500"))
    assert served["requests"] > 0
    after = target.get("deployments")
    assert progressive.template_fingerprint(after["veza-docs-green"]) == progressive.template_fingerprint(before)
    assert target.pods("green") == green_pods          # never restarted
    assert answers and set(answers) == {200}, answers   # and answering the whole time
    assert after["veza-docs"]["spec"]["replicas"] == 0 and _image(after["veza-docs"]).endswith(
        target.digests["late-bad"])
    assert after["veza-docs-green"]["metadata"]["labels"]["veza.io/role"] == "active"
    assert target.get("services")["veza-docs"]["spec"]["selector"]["veza.io/track"] == "green"
    rec = Manifest.load(target.state / "manifest.json").data["rollout"]
    assert rec["phase"] == "switched-back" and rec["reason"] == state.reason
    assert "class=failed>abort" in rollout_section(rec)
    assert state.status_line().startswith("blue-green: switched-back (veza-docs: green serves, blue at 0)")
    print(f"switched-back blue-green: {time.monotonic() - t0:.0f}s, {len(answers)} probes of green all 200")


_NONE = analysis.StepResult(0, 0, 0, 0.0)   # no analysis recorded yet


def _preview_judged(target: BlueGreen, build: str) -> Callable[[], bool]:
    """Whether `build`'s preview has a judged interval: its preview revision applied and ready, its analysis
    under way (a kill then is one during the analysis, not of a Helm upgrade cut short)."""
    def judged() -> bool:
        st = target.state_now()
        return st is not None and st.phase == bluegreen.PREVIEW and st.new[SERVICE].endswith(
            target.digests[build]) and len(st.results(bluegreen.PREVIEW_STEP).get(SERVICE, _NONE).intervals) >= 1
    return judged
def test_a_deploy_killed_during_the_preview_analysis_then_rerun_continues_and_is_promoted(target: BlueGreen) -> None:
    t0 = time.monotonic()
    target.manifest("good2")
    deploy = start_killable_deploy(__name__, target, KILLED_PF_PORTS)

    with ExitStack() as users:
        try:
            wait_for(_preview_judged(target, "good2"), 120,
                     "the first interval of the killed deploy's preview analysis")
            # users' traffic on both colours while nothing runs: the windows the dead deploy misses are judged at
            # their times by the rerun (analysis.run_step), on what Prometheus kept of them
            kt = KubeTarget(target.kubeconfig, "", target.namespace)
            for res in ("svc/veza-docs", "svc/veza-docs-preview"):
                port = users.enter_context(kubectl.port_forward(kt, res, 80))
                users.enter_context(LoadLoop(f"http://127.0.0.1:{port}", target.env.rollout.load))
        finally:
            output = deploy.kill()
        print(output)
        before = target.state_now()
        assert before is not None and before.phase == bluegreen.PREVIEW and before.colours == {SERVICE: "blue"}
        first = before.results(bluegreen.PREVIEW_STEP)[SERVICE].intervals[0]
        revision = target.revision()
        out = LinesReporter()
        m = Manifest.load(target.state / "manifest.json")
        deploy_release(target.cfg, target.env, m, [SERVICE], kubeconfig=target.kubeconfig, timeout_s=120,
                       reporter=out)
        print(out.text)
    assert "resuming the rollout in progress" in out.text and "undoing it first" not in out.text
    state = target.state_now()
    assert state is not None and state.phase == bluegreen.PROMOTED, out.text
    preview = state.results(bluegreen.PREVIEW_STEP)[SERVICE]
    assert preview.decision == "promote-step" and preview.intervals[0] == first   # continued, not started again
    assert len(preview.intervals) == 2
    _passed(state, bluegreen.POST_STEP)
    assert target.revision() == revision + 3   # the preview applied again (no change), switch, retire
    deps = target.get("deployments")
    assert _image(deps["veza-docs"]) == f"{REPO}@{target.digests['good2']}" and deps["veza-docs"]["spec"]["replicas"]
    assert deps["veza-docs-green"]["spec"]["replicas"] == 0
    status = LinesReporter()
    info = status_report(target.cfg, target.env, m, status, kubeconfig=target.kubeconfig)   # exit 7 on any drift
    assert info["differences"] == [] and info["blue_green"].startswith("blue-green: promoted"), status.text
    print(f"killed and rerun blue-green: {time.monotonic() - t0:.0f}s")


def test_a_build_failing_from_the_start_is_aborted_on_its_preview_and_never_serves(target: BlueGreen) -> None:
    """After the killed-and-rerun case blue serves good2: the new version goes to green, fails its preview analysis,
    and is aborted before any switch, blue's pods never restarted and answering throughout."""
    t0 = time.monotonic()
    before = target.get("deployments")["veza-docs"]
    blue_pods = target.pods("stable")
    revision = target.revision()
    out = LinesReporter()
    with health_answers(target, f"pod/{sorted(blue_pods)[0]}") as answers, pytest.raises(DeployFailed) as info:
        target.deploy("bad", out)
    assert info.value.exit_code == 5 and "blue-green of local aborted before the switch" in info.value.message, \
        out.text
    assert "error-ratio" in info.value.message and "old colour untouched" in info.value.message
    state = target.state_now()
    assert state is not None and state.phase == bluegreen.ABORTED and state.decision == "abort"
    assert state.colours == {SERVICE: "green"}   # blue served: the new version was green's
    preview = state.results(bluegreen.PREVIEW_STEP)[SERVICE]
    assert preview.decision == "abort" and 1 <= len(preview.intervals) <= 2, preview.reason
    assert not state.results(bluegreen.POST_STEP)   # never judged as serving: it never served
    assert target.revision() == revision + 2        # the preview, the abort: no switch
    after = target.get("deployments")
    assert progressive.template_fingerprint(after["veza-docs"]) == progressive.template_fingerprint(before)
    assert target.pods("stable") == blue_pods            # never restarted
    assert answers and set(answers) == {200}, answers    # and answering the whole time
    assert _image(after["veza-docs"]) == f"{REPO}@{target.digests['good2']}"
    assert after["veza-docs-green"]["spec"]["replicas"] == 0
    assert _image(after["veza-docs-green"]).endswith(target.digests["bad"])
    assert target.get("services")["veza-docs"]["spec"]["selector"]["veza.io/track"] == "stable"
    assert state.status_line().startswith("blue-green: aborted (veza-docs: blue serves, green at 0)")
    print(f"aborted blue-green preview: {time.monotonic() - t0:.0f}s, {len(answers)} probes of blue all 200")


def test_a_killed_preview_superseded_by_another_version_is_undone_first_then_the_new_one_promoted(
        target: BlueGreen) -> None:
    """Blue serves good2; a deploy of good is killed during its preview on green; the next deploy is of another
    version (stable): good's preview is undone first (never two previews), then stable previewed on green,
    switched to, judged and blue retired."""
    t0 = time.monotonic()
    blue_before = target.get("deployments")["veza-docs"]
    target.manifest("good")
    deploy = start_killable_deploy(__name__, target, KILLED_PF_PORTS)

    try:
        wait_for(_preview_judged(target, "good"), 120, "the first interval of the killed deploy's preview of good")
    finally:
        print(deploy.kill())
    killed = target.state_now()
    assert killed is not None and killed.phase == bluegreen.PREVIEW and killed.colours == {SERVICE: "green"}
    out = LinesReporter()
    m = target.deploy("stable", out)
    assert "not of this release's version: undoing it first (never two previews)" in out.text, out.text
    assert "blue-green abort: superseded by a deploy of another version; veza-docs: blue serves, green at 0" \
        in out.text, out.text
    state = target.state_now()
    assert state is not None and state.phase == bluegreen.PROMOTED, out.text
    assert state.new == {SERVICE: f"{REPO}@{target.digests['stable']}"} and state.colours == {SERVICE: "green"}
    _passed(state, bluegreen.PREVIEW_STEP)
    _passed(state, bluegreen.POST_STEP)
    deps = target.get("deployments")
    assert _image(deps["veza-docs-green"]) == f"{REPO}@{target.digests['stable']}"
    assert deps["veza-docs-green"]["metadata"]["labels"]["veza.io/role"] == "active"
    assert deps["veza-docs"]["spec"]["replicas"] == 0
    # blue ran good2 until it was retired: the undone preview never touched it
    assert _image(deps["veza-docs"]) == _image(blue_before) == f"{REPO}@{target.digests['good2']}"
    status = LinesReporter()
    info = status_report(target.cfg, target.env, m, status, kubeconfig=target.kubeconfig)   # exit 7 on any drift
    assert info["differences"] == [] and info["blue_green"].startswith("blue-green: promoted"), status.text
    print(f"superseded blue-green preview: {time.monotonic() - t0:.0f}s")
