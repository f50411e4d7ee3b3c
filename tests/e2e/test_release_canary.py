"""The canary strategy through `invoke release`, judged by the embedded Prometheus (issue 29's acceptance): one
release history of a fresh clone in a namespace of its own, its local environment with strategy = "canary" and
`monitoring = "embedded"` (the Prometheus the release deploys beside itself scrapes the pods by annotation with
the seed's relabelling, k8s/prometheus-config.yaml, so its `track` label comes from the chart's veza.io/track).

Only veza-docs changes between releases (only a changed service gets a canary; the cheapest build). Short windows:
scrape every 5 s (infra_prometheus.SCRAPE_INTERVAL_S), window 15 s (three scrapes: every rate() has samples),
interval 10 s (two scrapes: the request count's increase() has two), one step at 50% judged for two intervals.
The faulty builds are made in the clone (its services/docs/main.go), never by a switch in the project's code.

1. R1, the first install: all at once (no stable version to compare with).
2. R2, a good change: the release is killed with SIGKILL (its whole process group, like a killed CI job) once the
   analysis judged an interval; while nothing runs, users' traffic reaches both tracks; the rerun continues the
   step from the state in the cluster and promotes; `invoke status` exits 0, every service on its manifest
   digest, the canary line "promoted".
3. R3, "/" answers 500 on every fifth request: aborted within two intervals by the error-ratio rule (exit 5); a
   traffic loop of the test on the stable Deployment (its own port-forward) sees only 200s throughout; the stable
   Deployment's pod template, generation and pods never change. The report's rollout chart, opened in Chromium,
   shows the failed error-ratio point.
4. R4, "/" sleeps 300 ms: aborted by the p95-latency rule (against the stable version's p95).
5. R5/R6, a metric on a series nobody exports: no_data = "abort" aborts at its first interval; no_data = "pass"
   promotes, its reason saying the intervals passed only by policy.
6. R7, the same environment turned blue-green (strategy = "blue-green" in its pipeline.toml): the good change is
   previewed on veza-docs-preview, switched to, judged while it serves, and the old colour retired, all judged by
   the same embedded Prometheus through `invoke release`; `invoke status` exits 0 with "blue-green: promoted".
Namespace veza-ce2e-canary, registry repositories 127.0.0.1:5000/veza-ce2e-canary/*, port-forwards
127.0.0.1:21300-21399 (the releases' 21300-21349, the test's own 21350-21399)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config_rollout import Load
from pipeline.stages.deploy import bluegreen, canary, progressive
from pipeline.stages.deploy.load import LoadLoop
from pipeline.tools import kubectl as kc
from pipeline.tools.kubectl import KubeTarget
from tests.e2e.release_support import (
    clone_repo,
    commit,
    flat,
    invoke,
    invoke_argv,
    invoke_env,
    kill_port_forwards,
    kubectl,
    latest_report,
    local_env_in_namespace,
    manifest,
    namespace_of_its_own,
    status_matches,
)
from tests.integration.test_html_report_chromium import chromium

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.cluster_parallel,
              pytest.mark.slow]

NS = "veza-ce2e-canary"
SERVICE = "veza-docs"
RELEASE_PORTS = "21300-21349"
TEST_PORTS = "21350-21399"
INTERVAL_S = 10
STEP_S = 2 * INTERVAL_S
USERS = Load(rps=4, paths=("/",), max_requests=2000)   # the test's own traffic: users of the site
HANDLER = '\ts.Handle("/", func(w http.ResponseWriter, r *http.Request) {\n'
FAULT = """	var served atomic.Uint64
	s.Handle("/", func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1)%5 == 0 {
			http.Error(w, "injected by the canary e2e", http.StatusInternalServerError)
			return
		}
"""
SLOW = """	s.Handle("/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
"""
ABSENT = """
[[environments.local.rollout.metrics]]
name = "absent-series"
query = 'sum(rate(veza_e2e_never_exported_total{namespace="$namespace",service="$service",track="$track"}[$window]))'
max = 1
"""


def rollout_table(no_data: str = "abort", metrics: str = "") -> str:
    """The clone's [environments.local.rollout]: one step at 50% judged twice; the default metrics unless
    `metrics` lists others."""
    return f"""
# --- canary e2e
[environments.local.rollout]
strategy = "canary"
steps = [{{ weight = 50, analysis_s = {STEP_S} }}]
interval_s = {INTERVAL_S}
window = "15s"
min_requests = 10
failure_limit = 0
no_data = "{no_data}"
load = {{ rps = 10, paths = ["/"], max_requests = 2000 }}
{metrics}"""


def bluegreen_table() -> str:
    """The clone's [environments.local.rollout] as blue-green: the preview judged twice, the serving new version
    once, the old colour kept 5 s; the default metrics."""
    return f"""
# --- canary e2e
[environments.local.rollout]
strategy = "blue-green"
interval_s = {INTERVAL_S}
window = "15s"
min_requests = 10
failure_limit = 0
preview_analysis_s = {STEP_S}
post_promotion_analysis_s = {INTERVAL_S}
keep_old_s = 5
load = {{ rps = 10, paths = ["/"], max_requests = 2000 }}
"""


def set_rollout(clone: Path, table: str) -> None:
    toml = clone / "pipeline.toml"
    text = toml.read_text().split("\n# --- canary e2e\n")[0].rstrip("\n") + "\n"
    toml.write_text(text + table)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, local_cluster: Path, machine_registry: str) -> Iterator[Path]:
    dest = clone_repo(tmp_path_factory.mktemp("canary-e2e"))
    local_env_in_namespace(dest, NS)
    set_rollout(dest, rollout_table())
    commit(dest, "test: the local environment runs canaries")
    with namespace_of_its_own(local_cluster, machine_registry, NS, TEST_PORTS):
        yield dest


def _kt(kubeconfig: Path) -> KubeTarget:
    return KubeTarget(kubeconfig, "", NS)


def _release(clone: Path) -> tuple[int, str]:
    t0 = time.monotonic()
    res = invoke(clone, "release", "--env", "local", extra_env={kc.PORT_RANGE_ENV: RELEASE_PORTS}, timeout=900)
    print(f"release: exit {res.returncode} after {time.monotonic() - t0:.0f}s")
    return res.returncode, res.stdout + res.stderr


def _docs_change(clone: Path, what: str, main: str | None = None) -> None:
    """A new veza-docs: its index says `what`; its main.go is the committed one, or `main`."""
    docs = clone / "services/docs"
    index = docs / "site/index.html"
    text = re.sub(r"\n  <!-- e2e: .* -->", "", index.read_text())
    index.write_text(text.replace("</body>", f"  <!-- e2e: {what} -->\n</body>", 1))
    (docs / "main.go").write_text(_original_main(clone) if main is None else main)
    commit(clone, f"docs: {what}")


def _original_main(clone: Path) -> str:
    """services/docs/main.go as the clone's origin has it (before any fault of this file)."""
    out = subprocess.run(["git", "-C", str(clone), "show", "origin/HEAD:services/docs/main.go"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert HANDLER in out, "services/docs/main.go changed: update the canary e2e's faults"
    return out


def _with_fault(main: str) -> str:
    return main.replace(HANDLER, FAULT).replace('"path/filepath"\n', '"path/filepath"\n\t"sync/atomic"\n')


def _with_sleep(main: str) -> str:
    return main.replace(HANDLER, SLOW).replace('"path/filepath"\n', '"path/filepath"\n\t"time"\n')


def _rollout_doc(kubeconfig: Path) -> dict[str, Any] | None:
    """The release's rollout state (progressive.py's ConfigMap, either strategy's), None when there is none."""
    res = subprocess.run([str(kc.kubectl()), "--kubeconfig", str(kubeconfig), "-n", NS, "get", "configmap",
                          progressive.state_name("veza"), "-o", "json", "--ignore-not-found"], capture_output=True,
                         text=True, timeout=60, check=False)
    if res.returncode != 0 or not res.stdout.strip():
        return None
    doc: dict[str, Any] = json.loads(json.loads(res.stdout)["data"][progressive.STATE_KEY])
    return doc


def _state(kubeconfig: Path) -> canary.CanaryState | None:
    doc = _rollout_doc(kubeconfig)
    return None if doc is None else canary.CanaryState.from_dict(doc)


def _deployments(kubeconfig: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(kubectl(kubeconfig, "-n", NS, "get", "deploy", "-l", f"app.kubernetes.io/name={SERVICE}",
                              "-o", "json"))
    return {d["metadata"]["name"]: d for d in data["items"]}


def _stable_pods(kubeconfig: Path) -> set[str]:
    data = json.loads(kubectl(kubeconfig, "-n", NS, "get", "pods", "-l",
                              f"app.kubernetes.io/name={SERVICE},veza.io/track=stable", "-o", "json"))
    return {p["metadata"]["uid"] for p in data["items"] if not p["metadata"].get("deletionTimestamp")}


def _running(kubeconfig: Path) -> str:
    return str(_deployments(kubeconfig)[SERVICE]["spec"]["template"]["spec"]["containers"][0]["image"])


def _aborted(kubeconfig: Path, rc: int, out: str, stable: str) -> tuple[canary.CanaryState, dict[str, Any]]:
    """The release exited 5 on a canary abort, the canary gone, `stable` (the image that served before) serving; the
    state and the step's result of veza-docs."""
    text = flat(out)
    assert rc == 5, text[-6000:]
    assert "canary of local aborted" in text and "stable version untouched" in text, text[-4000:]
    state = _state(kubeconfig)
    assert state is not None and state.phase == canary.ABORTED and state.decision == "abort", text[-4000:]
    assert set(_deployments(kubeconfig)) == {SERVICE}
    result = state.steps[0]["results"][SERVICE]
    assert result["decision"] == "abort" and 1 <= len(result["intervals"]) <= 2, result["reason"]
    assert _running(kubeconfig) == stable
    return state, result


def test_the_first_install_goes_all_at_once(clone: Path, local_cluster: Path) -> None:
    rc, out = _release(clone)
    assert rc == 0, out[-8000:]
    assert "first install" in flat(out), flat(out)[-4000:]
    assert _state(local_cluster) is None
    assert set(_deployments(local_cluster)) == {SERVICE}
    st = invoke(clone, "status", "--env", "local", extra_env={kc.PORT_RANGE_ENV: RELEASE_PORTS})
    assert st.returncode == 0, st.stdout + st.stderr
    assert "monitoring: embedded Prometheus" in flat(st.stdout), st.stdout


def test_a_good_change_killed_during_analysis_is_promoted_by_the_rerun(clone: Path, local_cluster: Path) -> None:
    t0 = time.monotonic()
    _docs_change(clone, "a good change")
    proc = subprocess.Popen(invoke_argv("release", "--env", "local"), cwd=clone,
                            env=invoke_env(clone, {kc.PORT_RANGE_ENV: RELEASE_PORTS}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    with ExitStack() as users:
        try:
            deadline = time.monotonic() + 420
            while True:
                now = _state(local_cluster)
                if now is not None and now.phase == canary.STEP and now.results(1) \
                        and now.results(1)[SERVICE].intervals:
                    break
                assert proc.poll() is None, f"the release ended before its analysis judged an interval:\n" \
                                            f"{proc.communicate()[0][-6000:]}"
                assert time.monotonic() < deadline, "no judged interval within 420 s"
                time.sleep(1)
            # users keep coming while no release runs: the rerun judges the windows it missed at their times, on what
            # Prometheus kept of them (analysis.run_step)
            for res in (f"deployment/{SERVICE}", f"deployment/{SERVICE}-canary"):
                port = users.enter_context(kc.port_forward(_kt(local_cluster), res, 8083))
                users.enter_context(LoadLoop(f"http://127.0.0.1:{port}", USERS))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_output = proc.communicate(timeout=30)[0]
            kill_port_forwards(NS, RELEASE_PORTS)
        before = _state(local_cluster)
        assert before is not None and before.phase == canary.STEP, killed_output[-4000:]
        first = before.steps[0]["results"][SERVICE]["intervals"][0]
        assert set(_deployments(local_cluster)) == {SERVICE, f"{SERVICE}-canary"}   # left by the kill: one canary
        rc, out = _release(clone)
    text = flat(out)
    assert rc == 0, text[-8000:]
    assert "resuming the canary in progress" in text and "aborting it first" not in text, text[-4000:]
    state = _state(local_cluster)
    assert state is not None and state.phase == canary.PROMOTED, text[-4000:]
    result = state.steps[0]["results"][SERVICE]
    assert result["decision"] == "promote-step" and result["intervals"][0] == first   # continued, not restarted
    assert len(result["intervals"]) == STEP_S // INTERVAL_S
    assert all(i["requests"] >= 10 and i["outcome"] == "pass" for i in result["intervals"]), result
    deps = _deployments(local_cluster)
    digest = manifest(clone, "local")["services"][SERVICE]["push"]["digest"]
    assert set(deps) == {SERVICE}
    assert deps[SERVICE]["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@" + digest)
    info = status_matches(clone, "local", extra_env={kc.PORT_RANGE_ENV: RELEASE_PORTS})
    assert str(info.get("canary", "")).startswith("canary: promoted"), info
    st = invoke(clone, "status", "--env", "local", extra_env={kc.PORT_RANGE_ENV: RELEASE_PORTS})
    assert st.returncode == 0, st.stdout + st.stderr
    print(f"killed and rerun canary: {time.monotonic() - t0:.0f}s")


def test_a_change_failing_a_fifth_of_its_requests_is_aborted_while_stable_serves(
        clone: Path, local_cluster: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    _docs_change(clone, "a fifth of the requests fail", _with_fault(_original_main(clone)))
    before = _deployments(local_cluster)[SERVICE]
    stable = _running(local_cluster)
    pods = _stable_pods(local_cluster)
    with kc.port_forward(_kt(local_cluster), f"deployment/{SERVICE}", 8083, lifetime=900) as port, \
            LoadLoop(f"http://127.0.0.1:{port}", USERS) as stable_users:
        rc, out = _release(clone)
    seen = stable_users.record
    state, result = _aborted(local_cluster, rc, out, stable)
    assert "error-ratio" in state.reason, state.reason
    canary_load = next(x for x in state.steps[0]["load"] if x["by_status"].get("500"))
    assert 0.1 < canary_load["by_status"]["500"] / canary_load["requests"] < 0.3, canary_load
    after = _deployments(local_cluster)[SERVICE]
    assert canary.template_fingerprint(after) == canary.template_fingerprint(before)
    assert _stable_pods(local_cluster) == pods   # never restarted
    assert seen.requests > 20 and dict(seen.by_status) == {200: seen.requests}, seen.as_dict()   # served throughout

    # the report's rollout chart, as a browser renders it
    runs = sorted((clone / ".pipeline/local/runs").glob("*/report.html"), key=lambda p: p.stat().st_mtime)
    assert latest_report(clone, "local")["rollout"]["decision"] == "abort"
    dom = chromium(tmp_path, "--dump-dom", runs[-1].as_uri()).stdout
    charts = re.findall(r'<svg class="analysis" data-step="1" data-metric="([^"]+)"', dom)
    assert sorted(charts) == ["error-ratio", "p95-latency"], charts
    error_chart = dom[dom.index('data-metric="error-ratio"'):].split("</svg>")[0]
    assert 'class="point canary" data-verdict="fail"' in error_chart, error_chart[:3000]
    assert '<span class="failed">abort</span>' in dom
    print(f"aborted canary: {time.monotonic() - t0:.0f}s; stable answered {seen.requests} requests, all 200")


def test_a_latency_regression_is_caught_by_the_p95_rule(clone: Path, local_cluster: Path) -> None:
    stable = _running(local_cluster)
    _docs_change(clone, "every page takes 300 ms", _with_sleep(_original_main(clone)))
    rc, out = _release(clone)
    state, result = _aborted(local_cluster, rc, out, stable)
    assert "p95-latency" in state.reason and "error-ratio" not in state.reason, state.reason
    p95 = result["intervals"][-1]["points"]["p95-latency"]
    assert p95["verdict"] == "fail" and p95["canary"] > 0.25 > p95["baseline"], p95


def test_no_data_is_handled_as_configured(clone: Path, local_cluster: Path) -> None:
    set_rollout(clone, rollout_table("abort", ABSENT))
    stable = _running(local_cluster)
    _docs_change(clone, "judged on a series nobody exports, no_data abort")
    rc, out = _release(clone)
    state, result = _aborted(local_cluster, rc, out, stable)
    assert len(result["intervals"]) == 1 and result["intervals"][0]["outcome"] == "no-data", result
    assert "no_data policy: abort" in state.reason or "no-data policy: abort" in state.reason, state.reason

    set_rollout(clone, rollout_table("pass", ABSENT))
    _docs_change(clone, "judged on a series nobody exports, no_data pass")
    rc, out = _release(clone)
    assert rc == 0, flat(out)[-6000:]
    passed = _state(local_cluster)
    assert passed is not None and passed.phase == canary.PROMOTED, flat(out)[-4000:]
    result = passed.steps[0]["results"][SERVICE]
    assert [i["outcome"] for i in result["intervals"]] == ["no-data", "no-data"], result
    assert "passed only by policy (no-data policy: pass)" in result["reason"], result["reason"]


def test_the_environment_turned_blue_green_previews_switches_and_retires_the_old_colour(
        clone: Path, local_cluster: Path) -> None:
    t0 = time.monotonic()
    set_rollout(clone, bluegreen_table())
    _docs_change(clone, "a good change, released blue-green")
    rc, out = _release(clone)
    text = flat(out)
    assert rc == 0, text[-6000:]
    assert "svc/veza-docs-preview selects green" in text and "keeping the old colour" in text, text[-4000:]
    doc = _rollout_doc(local_cluster)
    assert doc is not None and doc["strategy"] == "blue-green", doc
    state = bluegreen.BlueGreenState.from_dict(doc)
    assert state.phase == bluegreen.PROMOTED and state.colours == {SERVICE: "green"}, state.reason
    for step, intervals in ((bluegreen.PREVIEW_STEP, 2), (bluegreen.POST_STEP, 1)):
        result = state.results(step)[SERVICE]
        assert result.decision == "promote-step" and len(result.intervals) == intervals, result.reason
        assert all(i.requests and i.requests >= 10 for i in result.intervals)   # judged on traffic
    digest = manifest(clone, "local")["services"][SERVICE]["push"]["digest"]
    deps = _deployments(local_cluster)
    assert set(deps) == {SERVICE, f"{SERVICE}-green"}, set(deps)
    green = deps[f"{SERVICE}-green"]
    assert green["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"@{digest}")
    assert green["metadata"]["labels"]["veza.io/role"] == "active" and deps[SERVICE]["spec"]["replicas"] == 0
    selector = json.loads(kubectl(local_cluster, "-n", NS, "get", "service", SERVICE, "-o", "json"))["spec"]["selector"]
    assert selector["veza.io/track"] == "green", selector
    info = status_matches(clone, "local", extra_env={kc.PORT_RANGE_ENV: RELEASE_PORTS})
    assert info["blue_green"].startswith("blue-green: promoted (veza-docs: green serves the new version, blue at 0)"), \
        info["blue_green"]
    print(f"blue-green release: {time.monotonic() - t0:.0f}s")
