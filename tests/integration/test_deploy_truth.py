"""Issue 15 on the real local cluster, with Helm 3 and Helm 4: status and the resume check observe the cluster;
recovery never destroys what serves. The tests of one Helm version build on each other in file order, in one namespace.

- a first install that fails is removed, and the message says so;
- after a deploy, status has no difference and deploy_holds() holds, cheaply;
- `kubectl set image` to another digest → status exits 7 naming the service and both digests, the resume check
  says so, and the next deploy restores the recorded digest; likewise scale to 0 and a deleted Deployment;
- history with a failed latest revision, then a verification failure → rolled back to the last deployed revision,
  the release still serves, the claim and its data survive.
"""

from __future__ import annotations

import dataclasses
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import DeployFailed, DriftFound
from pipeline.core.paths import CACHE_DIR, ROOT, TOOLS_BIN
from pipeline.stages.deploy import deploy_release
from pipeline.stages.deploy.commands import status_report
from pipeline.stages.deploy.drift import deploy_holds
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.tools import helm, kubectl
from pipeline.tools.kubectl import KubeTarget
from tests.integration.cluster_fixtures import cluster_use
from tests.integration.deploy_support import (
    PF_RANGE,
    DeployTarget,
    LinesReporter,
    kc,
    make_target,
    remove_target,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.engine, pytest.mark.slow]
pytest_plugins = ["tests.integration.deploy_fixtures"]

FAIL_TIMEOUT_S = 45
HELMS = {"helm3": TOOLS_BIN / "helm", "helm4": TOOLS_BIN / "helm4"}


# Helm 4's sequence may run in a second cluster lane, beside Helm 3's (its own namespace, registry and ports).
@pytest.fixture(scope="module", params=["helm3", pytest.param("helm4", marks=pytest.mark.cluster_parallel)])
def target(request: pytest.FixtureRequest, local_cluster: Path, deploy_registry: str, pushed_images: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployTarget]:
    old = {k: os.environ.get(k) for k in (helm.HELM_ENV, kubectl.PORT_RANGE_ENV)}
    os.environ[helm.HELM_ENV] = str(HELMS[request.param])
    os.environ[kubectl.PORT_RANGE_ENV] = PF_RANGE
    try:
        with cluster_use():  # shared: the other Helm version's sequence may run at the same time
            t = make_target(local_cluster, deploy_registry, pushed_images,
                            tmp_path_factory.mktemp(f"truth-{request.param}"), request.param.replace("helm", "tr"))
            try:
                yield t
            finally:
                remove_target(t)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _deploy(t: DeployTarget, *extra: Path, reporter: LinesReporter | None = None, timeout_s: int = 180,
            cfg: object = None):  # type: ignore[no-untyped-def]
    return deploy_release(cfg or t.cfg, t.env, t.manifest(), timeout_s=timeout_s,  # type: ignore[arg-type]
                          kubeconfig=t.kubeconfig, extra_values=[t.infra_values, *extra],
                          reporter=reporter or LinesReporter())


def _kt(t: DeployTarget) -> KubeTarget:
    return KubeTarget(t.kubeconfig, "", t.namespace)


def _rt(t: DeployTarget) -> ReleaseTarget:
    return ReleaseTarget.of(t.env, t.kubeconfig)


def _values(t: DeployTarget, name: str, doc: dict[str, object]) -> Path:
    p = t.state / name
    p.write_text(yaml.safe_dump(doc))
    return p


def _ref(t: DeployTarget, service: str) -> str:
    return f"{t.repository(service)}@{t.digests[service]}"


def _image(t: DeployTarget, deployment: str) -> str:
    return kc(t.kubeconfig, "-n", t.namespace, "get", "deploy", deployment, "-o",
              "jsonpath={.spec.template.spec.containers[0].image}")


def _status(t: DeployTarget) -> tuple[LinesReporter, DriftFound | None]:
    rep = LinesReporter()
    try:
        status_report(t.cfg, t.env, t.manifest(), rep, kubeconfig=t.kubeconfig)
    except DriftFound as exc:
        return rep, exc
    return rep, None


def _probe(t: DeployTarget, service: str, path: str = "/ready") -> int:
    with kubectl.port_forward(_kt(t), f"svc/{service}", 80) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return int(r.status)


def test_first_install_that_fails_is_removed_and_says_so(target: DeployTarget) -> None:
    broken = _values(target, "never-ready.yaml", {"services": {"veza-docs": {"probes": {"readinessPath": "/nope"}}}})
    rep = LinesReporter()
    with pytest.raises(DeployFailed) as exc:
        _deploy(target, broken, reporter=rep, timeout_s=FAIL_TIMEOUT_S)
    print(rep.text, f"\nerror: {exc.value.one_line()}")
    assert exc.value.exit_code == 5
    assert "the release was removed: no revision of it ever succeeded" in exc.value.message
    assert helm.status(_kt(target), "veza") is None  # really removed
    rec = target.manifest().stage_result("veza-docs", "deploy")
    assert rec is not None and rec["status"] == "failed"


def test_deploy_then_status_and_resume_check_hold(target: DeployTarget) -> None:
    res = _deploy(target)
    assert res.status == "deployed"
    rep, drift = _status(target)
    assert drift is None, rep.text
    t0 = time.monotonic()
    reason = deploy_holds(target.cfg, target.env, target.manifest(), LinesReporter(), rt=_rt(target))
    took = time.monotonic() - t0
    print(f"deploy_holds took {took:.2f}s")
    assert reason is None
    assert took < 2.0, f"deploy_holds took {took:.2f}s"


def test_set_image_is_reported_and_the_next_deploy_restores_it(target: DeployTarget) -> None:
    recorded = _ref(target, "veza-docs")
    other = f"{target.repository('veza-docs')}@{target.digests['veza-backend-api']}"
    # The backend-api image pushed under the docs repository: a digest the registry serves, another image.
    kc(target.kubeconfig, "-n", target.namespace, "set", "image", "deployment/veza-docs", f"veza-docs={other}")
    assert _image(target, "veza-docs") == other

    rep, drift = _status(target)
    print(rep.text)
    assert drift is not None and drift.exit_code == 7
    line = f"veza-docs: expected {target.digests['veza-docs']}, running {target.digests['veza-backend-api']}"
    assert any(line in ln for ln in rep.lines), rep.text
    reason = deploy_holds(target.cfg, target.env, target.manifest(), LinesReporter(), rt=_rt(target))
    assert reason is not None and reason.startswith(
        f"veza-docs runs {target.digests['veza-backend-api']} instead of {target.digests['veza-docs']}"), reason

    rep = LinesReporter()
    res = _deploy(target, reporter=rep)
    assert res.status == "deployed", rep.text
    assert any("drift: veza-docs" in ln for ln in rep.lines), rep.text
    assert _image(target, "veza-docs") == recorded
    rep, drift = _status(target)
    assert drift is None, rep.text


def test_scale_to_zero_and_deleted_deployment_are_reported_and_restored(target: DeployTarget) -> None:
    kc(target.kubeconfig, "-n", target.namespace, "scale", "deployment/veza-docs", "--replicas=0")
    kc(target.kubeconfig, "-n", target.namespace, "delete", "deployment/veza-chat-server", "--wait=true")
    rep, drift = _status(target)
    print(rep.text)
    assert drift is not None
    assert any("veza-docs: expected" in ln and "scaled to 0 replicas" in ln for ln in rep.lines), rep.text
    assert any("veza-chat-server: expected" in ln and "Deployment veza-chat-server does not exist" in ln
               for ln in rep.lines), rep.text
    assert deploy_holds(target.cfg, target.env, target.manifest(), LinesReporter(), rt=_rt(target)) is not None

    res = _deploy(target)
    assert res.status == "deployed"
    rep, drift = _status(target)
    assert drift is None, rep.text
    assert deploy_holds(target.cfg, target.env, target.manifest(), LinesReporter(), rt=_rt(target)) is None


def test_rollback_by_hand_breaks_the_resume_check(target: DeployTarget) -> None:
    st = helm.status(_kt(target), "veza")
    assert st is not None
    res = helm.rollback(_kt(target), "veza", st.revision - 1, timeout_s=120)
    assert res.ok, res.stderr
    reason = deploy_holds(target.cfg, target.env, target.manifest(), LinesReporter(), rt=_rt(target))
    assert reason == (f"release veza in {target.namespace} is deployed at revision {st.revision + 1}, "
                      f"not deployed at revision {st.revision}"), reason
    assert _deploy(target).status in ("deployed", "noop")


def test_failed_latest_revision_then_verification_failure_rolls_back_to_the_last_deployed(
        target: DeployTarget) -> None:
    kt = _kt(target)
    before = helm.status(kt, "veza")
    assert before is not None and before.status == "deployed"
    good = before.revision
    # Data in the stream server's claim (its hostPath volume on this machine).
    pvc_uid = kc(target.kubeconfig, "-n", target.namespace, "get", "pvc", "veza-stream-server", "-o",
                 "jsonpath={.metadata.uid}")
    data = CACHE_DIR / "volumes" / target.namespace / "veza-stream-server" / "kept.txt"
    marker = uuid.uuid4().hex
    data.write_text(marker)

    # A failed upgrade by hand (no --atomic): history "GOOD deployed, GOOD+1 failed".
    broken = _values(target, "by-hand.yaml", {"services": {"veza-docs": {"probes": {"readinessPath": "/nope"}}}})
    gen = target.state / "deploy" / "local-values.yaml"
    by_hand = helm.upgrade_install(kt, "veza", ROOT / "helm/veza",
                                   [target.env.values_file, target.infra_values, gen, broken], timeout_s=20,
                                   wait=True, rollback_on_failure=False)
    assert not by_hand.ok
    hist = helm.history(kt, "veza")
    assert [(r.revision, r.status) for r in hist[-2:]] == [(good, "deployed"), (good + 1, "failed")], hist

    # A deploy Helm accepts (pods Ready on the chart's probe) whose verification fails: the pipeline's ready path
    # for veza-docs answers 404.
    docs = dataclasses.replace(target.cfg.service("veza-docs"), ready_path="/nope-verify")
    cfg = dataclasses.replace(target.cfg, services=tuple(docs if s.name == "veza-docs" else s
                                                         for s in target.cfg.services))
    two = _values(target, "two-docs.yaml", {"services": {"veza-docs": {"replicas": 2}}})
    rep = LinesReporter()
    with pytest.raises(DeployFailed) as exc:
        _deploy(target, two, reporter=rep, cfg=cfg, timeout_s=120)
    print(rep.text, f"\nerror: {exc.value.one_line()}")
    assert exc.value.exit_code == 5
    assert f"rolled back to revision {good}" in exc.value.message, exc.value.message
    assert "uninstall" not in rep.text.lower() and "removed" not in exc.value.message

    after = helm.status(kt, "veza")
    assert after is not None and after.status == "deployed" and after.revision == good + 3
    hist = {r.revision: r for r in helm.history(kt, "veza")}
    assert hist[good + 3].description.startswith(f"Rollback to {good}"), hist[good + 3]
    wait_for(lambda: _image(target, "veza-docs") == _ref(target, "veza-docs"), 60, "docs image restored")
    assert _probe(target, "veza-docs") == 200  # the release still serves
    assert kc(target.kubeconfig, "-n", target.namespace, "get", "pvc", "veza-stream-server", "-o",
              "jsonpath={.metadata.uid}") == pvc_uid  # the same claim
    assert data.read_text() == marker  # and its data
    assert _probe(target, "veza-stream-server") == 200
