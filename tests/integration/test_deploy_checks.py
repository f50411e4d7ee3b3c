"""The functional checks after a deploy and in `invoke verify`, on the real local cluster (Helm 3): they run against
every deployed service through port-forwards, with the JWT_SECRET read from the chart's Secret, and are recorded
per service (what they write is read back from PostgreSQL and Redis). Two data paths broken while every pod stays
Ready fail them, naming the check: the Secret's jwt-secret rotated without restarting the API (`invoke verify`, exit
5), and stream-server's MAX_UPLOAD_BYTES set to 64 through values, meant as MiB (the deploy's verification: rolled
back, exit 5).

Before the functional checks ran after a deploy, that deploy succeeded and verify passed: the pods are Ready."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import DeployFailed
from pipeline.stages.deploy import deploy_release, verify_release
from pipeline.tools import helm, kubectl
from pipeline.tools.kubectl import KubeTarget
from tests.integration.cluster_fixtures import cluster_use
from tests.integration.deploy_support import PF_RANGE, DeployTarget, LinesReporter, kc, make_target, remove_target

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.engine, pytest.mark.slow]
pytest_plugins = ["tests.integration.deploy_fixtures"]

BLOB_CHECK = "veza-stream-server check 'PUT+GET /streams/{id}' failed"
EVERY_CHECK = {"veza-backend-api": {"/ready is true (deps answer)", "PUT+GET /api/v1/tracks/{id} (JWT)",
                                    "POST+GET /api/v1/tracks/{id}/plays (JWT)"},
               "veza-chat-server": {"POST /messages?room=pipeline-check → NATS"},
               "veza-stream-server": {"PUT+GET /streams/{id}"}, "veza-docs": {"GET / serves the HTML index"}}


@pytest.fixture(scope="module")
def target(local_cluster: Path, deploy_registry: str, pushed_images: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployTarget]:
    with pytest.MonkeyPatch.context() as mp, cluster_use():
        mp.delenv(helm.HELM_ENV, raising=False)   # the default Helm (3)
        mp.setenv(kubectl.PORT_RANGE_ENV, PF_RANGE)
        t = make_target(local_cluster, deploy_registry, pushed_images, tmp_path_factory.mktemp("checks"), "chk")
        try:
            yield t
        finally:
            remove_target(t)


def _deploy(t: DeployTarget, *extra: Path, lines: list[str], checks: str = "all"):  # type: ignore[no-untyped-def]
    reporter = LinesReporter()
    reporter.lines = lines
    env = dataclasses.replace(t.env, verify_checks=checks)
    return deploy_release(t.cfg, env, t.manifest(), timeout_s=120, kubeconfig=t.kubeconfig,
                          extra_values=[t.infra_values, *extra], reporter=reporter, run_id="chk-deploy")


def _checks(t: DeployTarget, record: str) -> dict[str, dict[str, bool]]:
    out: dict[str, dict[str, bool]] = {}
    for svc in t.digests:
        rec = t.manifest().stage_result(svc, record) or {}
        out[svc] = {c["name"]: c["ok"] for c in rec.get("checks") or []}
    return out


def _revision(t: DeployTarget) -> int:
    st = helm.status(KubeTarget(t.kubeconfig, "", t.namespace), "veza")
    assert st is not None and st.status == "deployed"
    return st.revision


def _verify(t: DeployTarget, run_id: str) -> None:
    verify_release(t.cfg, t.env, t.manifest(), kubeconfig=t.kubeconfig, reporter=LinesReporter(), run_id=run_id)


def _patch_jwt_secret(t: DeployTarget, data: str) -> None:
    kc(t.kubeconfig, "-n", t.namespace, "patch", "secret", "veza-secrets", "--type", "merge",
       "-p", json.dumps({"data": {"jwt-secret": data}}))


def test_functional_checks_after_a_deploy_and_in_verify_and_a_broken_data_path_fails_them(
        target: DeployTarget) -> None:
    lines: list[str] = []
    res = _deploy(target, lines=lines)
    assert res.status == "deployed", "\n".join(lines)
    deployed = _checks(target, "deploy")
    assert {s: set(c) for s, c in deployed.items()} == EVERY_CHECK and all(
        ok for c in deployed.values() for ok in c.values()), deployed
    # what the checks wrote is in the backends themselves, under the documented ids
    row = kc(target.kubeconfig, "-n", target.namespace, "exec", "deploy/postgres", "--", "sh", "-c",
             'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U veza -d veza -tAc '
             "\"SELECT created_by FROM tracks WHERE id = 'pipeline-check-chk-deploy'\"")
    assert row.strip() == "pipeline-check", row
    plays = kc(target.kubeconfig, "-n", target.namespace, "exec", "deploy/redis", "--", "sh", "-c",
               'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli GET veza:plays:pipeline-check-chk-deploy')
    assert plays.strip() == "2", plays

    # `invoke verify`: every check passes and is recorded
    _verify(target, "chk-verify")
    verified = _checks(target, "verify")
    assert {s: set(c) for s, c in verified.items()} == EVERY_CHECK and all(
        ok for c in verified.values() for ok in c.values()), verified

    # the Secret's jwt-secret rotated without restarting the API: it is Ready, but refuses the environment's tokens
    before = kc(target.kubeconfig, "-n", target.namespace, "get", "secret", "veza-secrets",
                "-o", "jsonpath={.data.jwt-secret}").strip()
    _patch_jwt_secret(target, base64.b64encode(b"r" * 40).decode())
    try:
        with pytest.raises(DeployFailed) as exc:
            _verify(target, "chk-verify-rotated")
    finally:
        _patch_jwt_secret(target, before)
    assert exc.value.exit_code == 5
    assert "veza-backend-api check 'PUT+GET /api/v1/tracks/{id} (JWT)' failed" in exc.value.message
    assert "PUT answered HTTP 401" in exc.value.message, exc.value.message
    assert "r" * 40 not in exc.value.message   # the secret is never printed
    rec = target.manifest().stage_result("veza-backend-api", "verify") or {}
    assert rec.get("status") == "fail" and rec.get("revision") == res.revision
    assert (target.manifest().stage_result("veza-docs", "verify") or {}).get("status") == "pass"

    # MAX_UPLOAD_BYTES=64 through values (meant as MiB): stream-server stays Ready, every upload is refused;
    # the deploy's verification fails on the check and rolls back
    broken = target.state / "upload-limit.yaml"
    broken.write_text(yaml.safe_dump({"services": {"veza-stream-server": {"env": {"MAX_UPLOAD_BYTES": "64"}}}}))
    lines = []
    with pytest.raises(DeployFailed) as exc:
        _deploy(target, broken, lines=lines)
    assert exc.value.exit_code == 5
    assert BLOB_CHECK in exc.value.message and "PUT answered" in exc.value.message, exc.value.message
    assert "rolled back to revision 1" in exc.value.message, exc.value.message
    assert _checks(target, "deploy")["veza-stream-server"] == {"PUT+GET /streams/{id}": False}
    assert _revision(target) == 3   # 2 failed its verification; 3 serves revision 1's values
