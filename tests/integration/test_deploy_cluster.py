"""Deploys on the real local cluster, with Helm 3 and Helm 4: by digest, pods Ready for real; a second deploy is
a no-op; a broken readiness path fails, rolls back automatically, leaves the previous revision serving (probed)
and exits 5; a digest the registry does not serve is refused before Helm runs (exit 3); `rollback --to` works; a
pending release from a killed deploy is recovered; once the environment trusts another key, a digest kept from the
deployed revision, a `rollback --to` and a failed deploy's automatic rollback never put an unverified image back.

The tests of one Helm version build on each other (one namespace per version), in file order."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import yaml

from pipeline.core.errors import DeployFailed, PolicyBlocked
from pipeline.core.manifest import Manifest
from pipeline.core.paths import ROOT, TOOLS_BIN
from pipeline.core.reporter import PlainReporter
from pipeline.stages.deploy import deploy_release, release_status, rollback_release
from pipeline.stages.sign import sign_images
from pipeline.tools import helm, kubectl
from pipeline.tools.kubectl import KubeTarget
from pipeline.trust import envkeys
from tests.integration.build_records import built_record
from tests.integration.cluster_fixtures import cluster_use
from tests.integration.deploy_support import (
    PF_RANGE,
    TEST_COMMIT,
    DeployTarget,
    LinesReporter,
    kc,
    make_target,
    remove_target,
    sh,
    wait_for,
    with_test_keys,
)

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.engine, pytest.mark.slow]
pytest_plugins = ["tests.integration.deploy_fixtures"]

HELMS = {"helm3": TOOLS_BIN / "helm", "helm4": TOOLS_BIN / "helm4"}
FAIL_TIMEOUT_S = 45


# Helm 4's sequence may run in a second cluster lane, beside Helm 3's (its own namespace, registry and ports).
@pytest.fixture(scope="module", params=["helm3", pytest.param("helm4", marks=pytest.mark.cluster_parallel)])
def target(request: pytest.FixtureRequest, local_cluster: Path, deploy_registry: str,
           pushed_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployTarget]:
    old = {k: os.environ.get(k) for k in (helm.HELM_ENV, kubectl.PORT_RANGE_ENV)}
    os.environ[helm.HELM_ENV] = str(HELMS[request.param])
    os.environ[kubectl.PORT_RANGE_ENV] = PF_RANGE
    try:
        with cluster_use():  # shared: the other Helm version's sequence may run at the same time
            t = make_target(local_cluster, deploy_registry, pushed_images, tmp_path_factory.mktemp(request.param),
                            request.param.replace("helm", "h"))
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


def _deploy(t: DeployTarget, *extra: Path, lines: list[str] | None = None, timeout_s: int = 180,
            manifest: object = None):  # type: ignore[no-untyped-def]
    reporter = LinesReporter()
    if lines is not None:
        reporter.lines = lines
    return deploy_release(t.cfg, t.env, manifest or t.manifest(), timeout_s=timeout_s, kubeconfig=t.kubeconfig,
                          extra_values=[t.infra_values, *extra], reporter=reporter)


def _kt(t: DeployTarget) -> KubeTarget:
    return KubeTarget(t.kubeconfig, "", t.namespace)


def _live(t: DeployTarget) -> dict[str, dict[str, object]]:
    data = json.loads(kc(t.kubeconfig, "-n", t.namespace, "get", "deploy", "-l", "app.kubernetes.io/instance=veza",
                         "-o", "json"))
    return {d["metadata"]["name"]: {"image": d["spec"]["template"]["spec"]["containers"][0]["image"],
                                    "ready": d["status"].get("readyReplicas", 0),
                                    "replicas": d["spec"]["replicas"],
                                    "readiness": d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
                                    ["httpGet"]["path"]} for d in data["items"]}


def _probe(t: DeployTarget, service: str, path: str = "/ready") -> tuple[int, str]:
    """GET path on svc/<service> through our own port-forward (independent of the deploy's verification)."""
    with kubectl.port_forward(_kt(t), f"svc/{service}", 80) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()


def _history(t: DeployTarget) -> list[helm.Revision]:
    return helm.history(_kt(t), "veza")


def test_deploy_by_digest_pods_ready(target: DeployTarget) -> None:
    lines: list[str] = []
    res = _deploy(target, lines=lines)
    assert res.status == "deployed" and res.revision == 1, "\n".join(lines)
    live = _live(target)
    assert set(live) == set(target.digests)
    for svc, digest in target.digests.items():
        assert live[svc]["image"] == f"{target.repository(svc)}@{digest}"
        assert live[svc]["ready"] == live[svc]["replicas"] == 1
    status, body = _probe(target, "veza-backend-api")  # ready = PostgreSQL and Redis answered for real
    assert status == 200 and '"ready":true' in body.replace(" ", "")
    status, body = _probe(target, "veza-stream-server")  # its PVC (hostPath PV) is writable
    assert status == 200
    assert any("server-side validation" in ln for ln in lines) and any("lint --strict: ok" in ln for ln in lines)
    rec = target.manifest().stage_result("veza-docs", "deploy")
    assert rec is not None and rec["status"] == "deployed" and rec["revision"] == 1
    st = release_status(target.cfg, target.env, target.manifest(), kubeconfig=target.kubeconfig)
    assert st["revision"] == 1 and all(s["matches_manifest"] for s in st["services"].values())


def test_second_deploy_is_a_noop(target: DeployTarget) -> None:
    before = _history(target)
    lines: list[str] = []
    res = _deploy(target, lines=lines)
    assert res.status == "noop" and res.revision == before[-1].revision
    assert any(ln.startswith("no-op: revision") for ln in lines), lines
    assert _history(target) == before


def _values(t: DeployTarget, name: str, doc: dict[str, object]) -> Path:
    p = t.state / name
    p.write_text(yaml.safe_dump(doc))
    return p


def _assert_previous_serving(t: DeployTarget, revision_before: int) -> None:
    st = helm.status(_kt(t), "veza")
    assert st is not None and st.status == "deployed" and st.revision > revision_before
    live = _live(t)
    assert live["veza-docs"]["readiness"] == "/ready"
    assert live["veza-docs"]["image"] == f"{t.repository('veza-docs')}@{t.digests['veza-docs']}"
    wait_for(lambda: all(v["ready"] == v["replicas"] for v in _live(t).values()), 90, "previous revision Ready")
    status, _ = _probe(t, "veza-docs")
    assert status == 200


def test_broken_readiness_path_rolls_back_and_exits_5(target: DeployTarget) -> None:
    rev = _history(target)[-1].revision
    broken = _values(target, "broken-ready.yaml",
                     {"services": {"veza-docs": {"probes": {"readinessPath": "/nope"}}}})
    lines: list[str] = []
    with pytest.raises(DeployFailed) as exc:
        _deploy(target, broken, lines=lines, timeout_s=FAIL_TIMEOUT_S)
    print("\n".join(lines), f"\nerror: {exc.value.one_line()}")  # shown with -s: what a user sees
    assert exc.value.exit_code == 5
    assert "rolled back" in exc.value.message
    text = "\n".join(lines)
    assert "Unhealthy" in text and "404" in text, text  # the real probe result, from the events
    assert "logs of failing pod veza-docs-" in text, text
    _assert_previous_serving(target, rev)
    rec = target.manifest().stage_result("veza-docs", "deploy")
    assert rec is not None and rec["status"] == "rolled_back"


def test_a_digest_the_registry_does_not_serve_is_refused_before_helm_exit_3(target: DeployTarget) -> None:
    """Once a missing image failed in the cluster and was rolled back; now the trust gate refuses it first."""
    hist = _history(target)
    m = target.manifest()
    missing = "sha256:" + "0" * 63 + "1"
    m.record("veza-docs", "push", {"status": "pushed", "digest": missing, "tags_pushed": []})
    try:
        with pytest.raises(PolicyBlocked) as exc:
            _deploy(target, timeout_s=FAIL_TIMEOUT_S, manifest=m)
    finally:
        m.record("veza-docs", "push", {"status": "pushed", "digest": target.digests["veza-docs"],
                                       "tags_pushed": ["test"]})
    assert exc.value.exit_code == 3
    assert exc.value.message.startswith(f"deploy to local refused: untrusted image {target.repository('veza-docs')}@"
                                        f"{missing} (veza-docs, Release manifest): the registry does not serve"), \
        exc.value.message
    assert _history(target) == hist   # helm never ran
    assert _live(target)["veza-docs"]["image"] == f"{target.repository('veza-docs')}@{target.digests['veza-docs']}"


def test_a_wrong_db_password_is_caught_by_readiness_and_rolled_back_naming_the_cause(target: DeployTarget) -> None:
    """The release's Secret holds a DB password PostgreSQL refuses: the new backend pods never become Ready, the
    deploy stops within seconds (not Helm's timeout) naming the dependency and PostgreSQL's reason, rolls back,
    and the previous pods (started with the right password) keep serving."""
    rev = _history(target)[-1].revision
    secret = json.loads(kc(target.kubeconfig, "-n", target.namespace, "get", "secret", "veza-secrets", "-o", "json"))
    good = secret["data"]["db-password"]
    wrong = "wrong-db-password-for-the-test"
    # A changed pod template, so the backend's pods are replaced and read the Secret again.
    roll = _values(target, "roll-backend.yaml",
                   {"services": {"veza-backend-api": {"env": {"VEZA_TEST_ROLL": str(rev)}}}})
    lines: list[str] = []
    kc(target.kubeconfig, "-n", target.namespace, "patch", "secret", "veza-secrets", "--type", "merge",
       "-p", json.dumps({"stringData": {"db-password": wrong}}))
    t0 = time.monotonic()
    try:
        with pytest.raises(DeployFailed) as exc:
            _deploy(target, roll, lines=lines, timeout_s=120)
    finally:
        kc(target.kubeconfig, "-n", target.namespace, "patch", "secret", "veza-secrets", "--type", "merge",
           "-p", json.dumps({"data": {"db-password": good}}))
    elapsed = time.monotonic() - t0
    print("\n".join(lines), f"\nerror: {exc.value.one_line()}")
    assert exc.value.exit_code == 5 and "rolled back" in exc.value.message
    msg = exc.value.message
    assert "Pod veza-backend-api-" in msg and "credentials-rejected" in msg, msg
    assert "postgres: password authentication failed" in msg and "28P01" in msg, msg
    assert elapsed < 100, f"took {elapsed:.0f}s: the fail-fast should beat Helm's 120 s timeout"
    text = "\n".join(lines)
    assert wrong not in text and wrong not in msg
    # The diagnosis shows the failing pod's own log lines, which name the cause too.
    logs = text.split("logs of failing pod veza-backend-api-", 1)
    assert len(logs) == 2 and "SQLSTATE 28P01" in logs[1], text
    st = helm.status(_kt(target), "veza")
    assert st is not None and st.status == "deployed" and st.revision > rev
    status, body = _probe(target, "veza-backend-api")
    assert status == 200 and json.loads(body)["checks"] == {"postgres": "ok", "redis": "ok"}


def _call(t: DeployTarget, service: str, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP call to svc/<service> through our own port-forward; (status, body), error statuses included."""
    with kubectl.port_forward(_kt(t), f"svc/{service}", 80) as port:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def _pod_uids(t: DeployTarget, service: str) -> set[str]:
    data = json.loads(kc(t.kubeconfig, "-n", t.namespace, "get", "pods", "-l",
                         f"app.kubernetes.io/name={service}", "-o", "json"))
    return {p["metadata"]["uid"] for p in data["items"] if not p["metadata"].get("deletionTimestamp")}


def test_data_written_before_a_rollout_is_read_after_it_and_after_a_rollback(target: DeployTarget) -> None:
    """The stream server's volume (its PersistentVolumeClaim) and the API's PostgreSQL rows outlive the pods: a
    rollout that replaces both services' pods, then a rollback that replaces them again, read the same data."""
    blob = os.urandom(32 * 1024)
    assert _call(target, "veza-stream-server", "PUT", "/streams/kept", blob)[0] in (200, 201)
    token = jwt.encode({"sub": "e2e", "exp": int(time.time()) + 600},
                       _secret_value(target, "jwt-secret"), algorithm="HS256")
    status, body = _call(target, "veza-backend-api", "PUT", "/api/v1/tracks/kept", b'{"title":"kept"}',
                         {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert status == 200, body
    rev = _history(target)[-1].revision
    before = _pod_uids(target, "veza-stream-server") | _pod_uids(target, "veza-backend-api")
    roll = _values(target, "roll-data.yaml", {"services": {name: {"env": {"VEZA_TEST_ROLL": f"data-{rev}"}}
                                                          for name in ("veza-stream-server", "veza-backend-api")}})
    res = _deploy(target, roll)
    assert res.status == "deployed" and res.revision == rev + 1
    rolled = _pod_uids(target, "veza-stream-server") | _pod_uids(target, "veza-backend-api")
    assert not before & rolled, "the rollout should have replaced the pods"
    assert _call(target, "veza-stream-server", "GET", "/streams/kept") == (200, blob)
    assert json.loads(_call(target, "veza-backend-api", "GET", "/api/v1/tracks/kept")[1])["title"] == "kept"

    rollback_release(target.cfg, target.env, rev, kubeconfig=target.kubeconfig, reporter=LinesReporter())
    wait_for(lambda: all(v["ready"] == v["replicas"] for v in _live(target).values()), 90, "rolled back, Ready")
    assert not rolled & (_pod_uids(target, "veza-stream-server") | _pod_uids(target, "veza-backend-api"))
    assert _call(target, "veza-stream-server", "GET", "/streams/kept") == (200, blob)
    assert json.loads(_call(target, "veza-backend-api", "GET", "/api/v1/tracks/kept")[1])["title"] == "kept"


def _secret_value(t: DeployTarget, key: str) -> str:
    secret = json.loads(kc(t.kubeconfig, "-n", t.namespace, "get", "secret", "veza-secrets", "-o", "json"))
    return base64.b64decode(secret["data"][key]).decode()


def test_rollback_to_a_revision(target: DeployTarget) -> None:
    # The revision serving now (earlier tests of this file made several; the oldest ones are pruned by Helm's
    # --history-max, so revision 1 may be gone): read what it deployed before anything changes.
    serving = _history(target)[-1].revision
    wanted = helm.get_values(_kt(target), "veza", revision=serving)["global"]["deployHash"]
    two = _values(target, "two-docs.yaml", {"services": {"veza-docs": {"replicas": 2}}})
    res = _deploy(target, two)
    assert res.status == "deployed" and _live(target)["veza-docs"]["replicas"] == 2
    new_rev = rollback_release(target.cfg, target.env, serving, kubeconfig=target.kubeconfig,
                               reporter=LinesReporter())
    assert new_rev == res.revision + 1
    assert _live(target)["veza-docs"]["replicas"] == 1
    assert helm.get_values(_kt(target), "veza")["global"]["deployHash"] == wanted
    status, _ = _probe(target, "veza-docs")
    assert status == 200


KILLED_DEPLOY = textwrap.dedent("""
    import dataclasses, json, sys
    from pathlib import Path
    from pipeline.core.config import load_config
    from pipeline.core.manifest import Manifest
    from pipeline.core.reporter import PlainReporter
    from pipeline.stages.deploy import deploy_release
    a = json.loads(sys.argv[1])
    base = load_config()
    env = dataclasses.replace(base.env("local"), namespace=a["ns"], helm_release="veza", local_infra=False,
                              generate_secrets=True, values_file=Path(a["values_file"]))
    cfg = dataclasses.replace(base, state_dir=Path(a["state"]), environments={"local": env},
                              signing=dataclasses.replace(base.signing, key_dir=Path(a["state"]) / "keys"))
    deploy_release(cfg, env, Manifest.load(Path(a["state"]) / "manifest.json"), timeout_s=120,
                   kubeconfig=Path(a["kubeconfig"]), extra_values=[Path(p) for p in a["extra"]],
                   reporter=PlainReporter(verbose=True))
""")


def test_pending_release_from_a_killed_deploy_is_recovered(target: DeployTarget) -> None:
    rev = _history(target)[-1].revision
    # A deploy that will wait (its docs pods never become Ready), killed with SIGKILL mid-wait.
    slow = _values(target, "slow.yaml", {"services": {"veza-docs": {"probes": {"readinessPath": "/nope"}}}})
    args = {"ns": target.namespace, "values_file": str(target.env.values_file), "state": str(target.state),
            "kubeconfig": str(target.kubeconfig), "extra": [str(target.infra_values), str(slow)]}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DEPLOY, json.dumps(args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ})
    try:
        wait_for(lambda: (s := helm.status(_kt(target), "veza")) is not None and s.status == "pending-upgrade",
                 120, "the deploy to reach pending-upgrade")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the deploy and its helm child, like a killed CI job
        proc.wait(timeout=30)
    st = helm.status(_kt(target), "veza")
    assert st is not None and st.status == "pending-upgrade"
    # plain helm refuses to work on it
    blocked = helm.upgrade_install(_kt(target), "veza", ROOT / "helm/veza", [target.env.values_file], timeout_s=30,
                                   dry_run="server")
    assert not blocked.ok and "another operation" in (blocked.stderr + blocked.stdout)

    lines: list[str] = []
    res = _deploy(target, lines=lines)
    text = "\n".join(lines)
    print(text)
    assert "stuck in pending-upgrade" in text and f"helm rollback veza {rev} --namespace" in text, text
    assert "recovered: release now deployed" in text, text
    assert res.status in ("deployed", "noop")
    _assert_previous_serving(target, rev)


def test_untrusted_images_never_go_back_into_the_cluster(target: DeployTarget, tmp_path: Path) -> None:
    """The environment now trusts another key only (its key was replaced): what the serving revision runs was
    signed by the old one. `rollback --to` an earlier revision: refused. A `--service` deploy of an image signed
    by the new key keeps the other services' digests from the serving revision: refused, naming a kept one. A
    deploy whose images are all signed by the new key (veza-docs by its digest in another repository) that fails
    does not roll back to the unverified serving revision: exit 5, "not rolled back", the failed revision stays.
    Then the old key again: a deploy restores."""
    hist = _history(target)
    serving = hist[-1].revision
    other = with_test_keys(target.cfg, tmp_path / "other-keys")
    envkeys.keygen(other, target.env)   # the replacing key pair
    quiet = PlainReporter(sink=lambda _: None)
    with pytest.raises(PolicyBlocked) as back:
        rollback_release(other, target.env, hist[-2].revision, kubeconfig=target.kubeconfig, reporter=quiet)
    assert back.value.exit_code == 3 and "\n" not in back.value.one_line()
    assert back.value.message.startswith(f"rollback of local to revision {hist[-2].revision} refused: untrusted "
                                         "image "), back.value.message
    assert "not signed by a trusted key" in back.value.message, back.value.message

    # veza-docs by the same digest in another repository, signed there by the new key only
    moved = f"{target.registry}/veza-test/veza-docs-moved"
    sh("skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
       f"docker://{target.repository('veza-docs')}@{target.digests['veza-docs']}", f"docker://{moved}:test")
    fresh = Manifest.new(tmp_path / "manifest.json", env="local", release_id="test-moved",
                         version={"sha": TEST_COMMIT})
    for svc, digest in target.digests.items():
        fresh.set_service(svc, repository=moved if svc == "veza-docs" else target.repository(svc), tags=["test"],
                          input_digest="sha256:test")
        fresh.record(svc, "build", built_record("sha256:" + "b" * 64, TEST_COMMIT))   # the facts sign requires
        fresh.record(svc, "push", {"status": "pushed", "digest": digest, "tags_pushed": ["test"]})
    sign_images(other, target.env, fresh, quiet, ["veza-docs"])
    with pytest.raises(PolicyBlocked) as kept:
        deploy_release(other, target.env, fresh, ["veza-docs"], timeout_s=60, kubeconfig=target.kubeconfig,
                       extra_values=[target.infra_values], reporter=LinesReporter())
    assert kept.value.exit_code == 3 and "\n" not in kept.value.one_line()
    assert f", kept from revision {serving}): not signed by a trusted key" in kept.value.message, kept.value.message
    assert _history(target) == hist   # neither ran helm

    sign_images(other, target.env, fresh, quiet)   # every service, with the new key
    broken = _values(target, "broken-trust.yaml", {"services": {"veza-docs": {"probes": {"readinessPath": "/nope"}}}})
    out = LinesReporter()
    with pytest.raises(DeployFailed) as failed:
        deploy_release(other, target.env, fresh, timeout_s=FAIL_TIMEOUT_S, kubeconfig=target.kubeconfig,
                       extra_values=[target.infra_values, broken], reporter=out)
    assert failed.value.exit_code == 5
    assert "not rolled back (the rollback to revision" in failed.value.message, failed.value.message
    after = _history(target)
    assert after[-1].revision == serving + 1 and after[-1].status != "deployed", after   # no rollback revision
    assert any("a failure will not roll back" in ln for ln in out.lines), out.lines

    res = _deploy(target)   # the environment's own key again: the signed release deploys, and serves
    assert res.status == "deployed"
    assert _live(target)["veza-docs"]["image"] == f"{target.repository('veza-docs')}@{target.digests['veza-docs']}"
