"""The canary strategy on the real local cluster, judged by a real Prometheus (Debian's 2.42, started by the test
on 127.0.0.1:21600-21699) scraping the stable and the canary pods: the host routes to pod IPs, so the test gives
Prometheus file_sd targets it computes from the pods every second, labelled namespace/service/track as the seed's
pod relabelling does (Debian's Prometheus has no Kubernetes discovery here).

veza-docs only (no infra), in a namespace veza-canary-*; four builds of it from the project's Dockerfile, pushed to
the machine's registry as 127.0.0.1:5000/veza-canary-test/veza-docs (stable, good, good2: VERSION build args
differ, so do the digests; bad: a copy of services/docs in the test's tmp dir whose "/" answers 500 on every
fifth request; nothing in the project knows of it), removed from the engine at the end (the kubelet's pulls
too; the registry keeps their blobs). The tests build on each other in file order:
1. a first install (all at once: no stable version to compare with), then a good build is promoted;
2. the bad build is aborted within two intervals (exit 5), the stable Deployment untouched (same pod template
   and generation, the same pods) and answering throughout;
3. a good build's deploy killed with SIGKILL during analysis, then rerun: the step continues from the state in
   the cluster and is promoted; one canary at most at any time; `invoke status` green.
Port-forwards 127.0.0.1:21650-21699."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.config_rollout import DEFAULT_METRICS, Load, Rollout, Step
from pipeline.core.errors import DeployFailed
from pipeline.core.manifest import Manifest
from pipeline.core.paths import ROOT
from pipeline.release.html_report import rollout_section
from pipeline.stages.deploy import canary, deploy_release
from pipeline.stages.deploy.commands import status_report
from pipeline.stages.deploy.load import LoadLoop
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget
from tests.e2e.release_support import remove_release
from tests.integration.deploy_support import LinesReporter, kc, sh, wait_for
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

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]

REPO = "127.0.0.1:5000/veza-canary-test/veza-docs"
# the killed deploy forwards from its own range: the kill of its forwards must leave the users' ones
PF_PORTS, KILLED_PF_PORTS = "21650-21679", "21680-21699"
FAULT = """	var served atomic.Uint64
	s.Handle("/", func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1)%5 == 0 {
			http.Error(w, "injected by the canary test", http.StatusInternalServerError)
			return
		}
"""


def canary_rollout(prometheus: str) -> Rollout:
    """Short windows (scrape 1 s, window 10 s, interval 5 s): one step at 50%, judged twice, on the default
    metrics (error ratio, p95 latency against the stable version)."""
    return Rollout(strategy="canary", steps=(Step(weight=50, analysis_s=10),), interval_s=5, window="10s",
                   min_requests=5, prometheus=prometheus, metrics=DEFAULT_METRICS,
                   load=Load(rps=10, paths=("/",), max_requests=2000))


def target_config(namespace: str, state: Path, prometheus: str) -> Config:
    return rollout_config(namespace, state, canary_rollout(prometheus))


@dataclasses.dataclass
class Canary(RolloutTarget):
    repository: ClassVar[str] = REPO

    def deployments(self) -> dict[str, dict[str, Any]]:
        data = json.loads(kc(self.kubeconfig, "-n", self.namespace, "get", "deploy", "-o", "json"))
        return {d["metadata"]["name"]: d for d in data["items"]}

    def pods(self, track: str) -> set[str]:
        data = json.loads(kc(self.kubeconfig, "-n", self.namespace, "get", "pods", "-l", f"veza.io/track={track}",
                             "-o", "json"))
        return {p["metadata"]["uid"] for p in data["items"] if not p["metadata"].get("deletionTimestamp")}


def _images(cfg: Config, tmp: Path) -> dict[str, str]:
    run = "c" + uuid.uuid4().hex[:8]
    bad = faulty_docs(cfg, tmp / "docs-bad", FAULT)
    context = cfg.service(SERVICE).context
    return {"stable": build_docs(cfg, REPO, run, "stable", context, "canary-stable"),
            "good": build_docs(cfg, REPO, run, "good", context, "canary-good"),
            "good2": build_docs(cfg, REPO, run, "good2", context, "canary-good2"),
            "bad": build_docs(cfg, REPO, run, "bad", bad, "canary-bad")}


@pytest.fixture(scope="module")
def target(local_cluster: Path, machine_registry: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Canary]:
    assert REPO.startswith(machine_registry + "/")
    old = os.environ.get(kubectl.PORT_RANGE_ENV)
    os.environ[kubectl.PORT_RANGE_ENV] = PF_PORTS
    tmp = tmp_path_factory.mktemp("canary")
    base = load_config(ROOT / "pipeline.toml", check_files=False)
    t0 = time.monotonic()
    digests = _images(base, tmp)
    print(f"four builds of {SERVICE} pushed in {time.monotonic() - t0:.0f}s")
    ns = f"veza-canary-{uuid.uuid4().hex[:6]}"
    kc(local_cluster, "create", "namespace", ns)
    kc(local_cluster, "label", "namespace", ns, "veza.pipeline.test=deploy")
    sd = sd_dir(tmp)
    sync = PodTargets(local_cluster, ns, sd, int(base.service(SERVICE).port))
    sync.start()
    try:
        with running_prometheus(SCRAPE, tmp, first_free(range(21600, 21650)), sd_dir=sd) as url:
            yield Canary(target_config(ns, tmp / "state", url), local_cluster, ns, tmp / "state", url, digests)
    finally:
        sync.halt.set()
        sync.join(timeout=30)
        remove_release(local_cluster, ns)
        # the kubelet pulled the test's builds into the shared engine: removed by their IDs
        for image in set(sh("docker", "images", "-q", REPO, check=False).split()):
            sh("docker", "rmi", image, check=False)
        if old is None:
            os.environ.pop(kubectl.PORT_RANGE_ENV, None)
        else:
            os.environ[kubectl.PORT_RANGE_ENV] = old


def _achieved(out: LinesReporter) -> None:
    assert "veza-docs: asked 50%, achieved 1/2 = 50% (replica ratio, no router)" in out.text


def test_a_good_build_is_promoted_after_its_canary_step(target: Canary) -> None:
    t0 = time.monotonic()
    first = LinesReporter()
    target.deploy("stable", first)
    assert "first install" in first.text
    out = LinesReporter()
    m = target.deploy("good", out)
    _achieved(out)
    state = canary.read_state(target.rt)
    assert state is not None and state.phase == canary.PROMOTED, out.text
    result = state.results(1)[SERVICE]
    assert result.decision == "promote-step" and len(result.intervals) == 2
    assert all(i.requests and i.requests >= 5 for i in result.intervals)   # judged on traffic, not on silence
    load = state.steps[0]["load"]
    assert len(load) == 2 and all(x["requests"] > 0 and set(x["by_status"]) == {"200"} for x in load)
    deps = target.deployments()
    assert set(deps) == {"veza-docs"}   # the canary is gone with the promotion
    assert deps["veza-docs"]["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPO}@{target.digests['good']}"
    rec = m.data["rollout"]
    assert rec["phase"] == "promoted" and rec["steps"][0]["decision"] == "promote-step"
    assert 'class=ok>promote-step' in rollout_section(rec)
    print(f"first install and a promoted canary: {time.monotonic() - t0:.0f}s")


def test_a_build_that_fails_a_fifth_of_its_requests_is_aborted_and_stable_never_moves(target: Canary) -> None:
    t0 = time.monotonic()
    before = target.deployments()["veza-docs"]
    stable_pods = target.pods("stable")
    out = LinesReporter()
    # the stable Deployment's pods, asked through the whole rollout
    with health_answers(target, "deployment/veza-docs") as answers, pytest.raises(DeployFailed) as info:
        target.deploy("bad", out)
    assert info.value.exit_code == 5 and "canary of local aborted" in info.value.message
    assert "error-ratio" in info.value.message and "stable version untouched" in info.value.message
    _achieved(out)
    state = canary.read_state(target.rt)
    assert state is not None and state.phase == canary.ABORTED and state.decision == "abort"
    result = state.results(1)[SERVICE]
    assert result.decision == "abort" and len(result.intervals) <= 2, result.reason
    canary_load = next(x for x in state.steps[0]["load"] if x["by_status"].get("500"))
    assert 0.1 < canary_load["by_status"]["500"] / canary_load["requests"] < 0.3
    after = target.deployments()
    assert set(after) == {"veza-docs"}
    assert canary.template_fingerprint(after["veza-docs"]) == canary.template_fingerprint(before)
    assert target.pods("stable") == stable_pods   # never restarted
    assert answers and set(answers) == {200}, answers   # and serving the whole time
    rec = Manifest.load(target.state / "manifest.json").data["rollout"]
    assert rec["decision"] == "abort" and rec["reason"] == state.reason
    assert "class=failed>abort" in rollout_section(rec)
    print(f"aborted canary: {time.monotonic() - t0:.0f}s, {len(answers)} probes of stable all 200")


def test_a_deploy_killed_during_analysis_then_rerun_continues_and_is_promoted(target: Canary) -> None:
    t0 = time.monotonic()
    target.manifest("good2")
    deploy = start_killable_deploy(__name__, target, KILLED_PF_PORTS)

    def judged() -> bool:
        st = canary.read_state(target.rt)
        return st is not None and st.phase == canary.STEP and st.canary[SERVICE].endswith(target.digests["good2"]) \
            and bool(st.results(1)) and len(st.results(1)[SERVICE].intervals) >= 1
    with ExitStack() as users:
        try:
            wait_for(judged, 120, "the first interval of the killed deploy's analysis")
            # users' traffic on both tracks, as a real service has: the windows the dead deploy misses are judged at
            # their times by the rerun (analysis.run_step), on what Prometheus kept of them
            kt = KubeTarget(target.kubeconfig, "", target.namespace)
            for res in ("deployment/veza-docs", "deployment/veza-docs-canary"):
                port = users.enter_context(kubectl.port_forward(kt, res, 8083))
                users.enter_context(LoadLoop(f"http://127.0.0.1:{port}", target.env.rollout.load))
        finally:
            output = deploy.kill()
        print(output)
        before = canary.read_state(target.rt)
        assert before is not None and before.phase == canary.STEP
        first = before.results(1)[SERVICE].intervals[0]
        assert set(target.deployments()) == {"veza-docs", "veza-docs-canary"}   # one canary, left by the kill

        out = LinesReporter()
        m = Manifest.load(target.state / "manifest.json")
        try:
            deploy_release(target.cfg, target.env, m, [SERVICE], kubeconfig=target.kubeconfig, timeout_s=120,
                           reporter=out)
        finally:
            print(out.text)
    assert "resuming the canary in progress" in out.text and "aborting it first" not in out.text
    state = canary.read_state(target.rt)
    assert state is not None and state.phase == canary.PROMOTED, out.text
    result = state.results(1)[SERVICE]
    assert result.decision == "promote-step" and result.intervals[0] == first   # continued, not started again
    assert len(result.intervals) == 2
    deps = target.deployments()
    assert set(deps) == {"veza-docs"}
    assert deps["veza-docs"]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"{REPO}@{target.digests['good2']}"
    status = LinesReporter()
    info = status_report(target.cfg, target.env, m, status, kubeconfig=target.kubeconfig)   # exit 7 on any drift
    assert info["differences"] == [] and info["canary"].startswith("canary: promoted"), status.text
    print(f"killed and rerun canary: {time.monotonic() - t0:.0f}s")
