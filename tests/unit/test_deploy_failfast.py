"""Fail fast: which pod states cannot recover during a deploy, judged from Pod/PVC objects as the API gives them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.stages.deploy.failfast import Thresholds, find_blocker, pull_error, waiting_blocker
from pipeline.tools.kubectl import Event

T0 = 1_800_000_000.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod(name: str = "veza-docs-abc", created: float = T0 + 1, *, conditions: list[dict[str, Any]] | None = None,
         waiting: dict[str, Any] | None = None, restarts: int = 0, last: dict[str, Any] | None = None,
         claim: str = "") -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "app", "image": "r/x@sha256:1", "restartCount": restarts,
                          "state": {"waiting": waiting} if waiting else {"running": {}}}
    if last:
        cs["lastState"] = {"terminated": last}
    spec: dict[str, Any] = {"containers": [{"name": "app"}]}
    if claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return {"metadata": {"name": name, "creationTimestamp": _iso(created)}, "spec": spec,
            "status": {"conditions": conditions or [], "containerStatuses": [] if conditions else [cs]}}


def _unschedulable(message: str, since: float) -> list[dict[str, Any]]:
    return [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
             "lastTransitionTime": _iso(since)}]


def test_a_healthy_starting_pod_is_no_blocker() -> None:
    assert find_blocker([_pod(waiting={"reason": "ContainerCreating"})], [], since=T0, now=T0 + 60) is None


def test_an_unbound_claim_blocks_after_the_grace_naming_pod_and_claim() -> None:
    msg = "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims."
    pod = _pod("veza-veza-stream-server-1", conditions=_unschedulable(msg, T0 + 2), claim="veza-veza-stream-server")
    pvc = {"metadata": {"name": "veza-veza-stream-server"}, "spec": {}, "status": {"phase": "Pending"}}
    assert find_blocker([pod], [pvc], since=T0, now=T0 + 5) is None  # within the grace: may still bind
    b = find_blocker([pod], [pvc], since=T0, now=T0 + 13)
    assert b is not None and b.category == "unbound-claim" and b.name == "veza-veza-stream-server-1"
    assert "PersistentVolumeClaim veza-veza-stream-server is Pending" in b.line()
    assert "unset, and the cluster has no default" in b.line()


def test_insufficient_resources_block_as_unschedulable() -> None:
    pod = _pod(conditions=_unschedulable("0/1 nodes are available: 1 Insufficient cpu.", T0 + 1))
    b = find_blocker([pod], [], since=T0, now=T0 + 20)
    assert b is not None and (b.category, b.reason) == ("unschedulable", "0/1 nodes are available: 1 Insufficient cpu.")


def test_a_pull_failure_the_kubelet_retries_blocks_only_after_its_grace() -> None:
    # ErrImagePull / ImagePullBackOff may heal (a registry restarting, a node's CA being written): the kubelet
    # retries with back-off, so they block once they persist pull_grace_s from the pod's creation.
    grace = Thresholds().pull_grace_s
    for reason in ("ErrImagePull", "ImagePullBackOff"):
        pod = _pod(waiting={"reason": reason, "message": 'Back-off pulling image "r/x@sha256:1"'})
        assert find_blocker([pod], [], since=T0, now=T0 + 13) is None, reason
        assert find_blocker([pod], [], since=T0, now=T0 + 1 + grace - 1) is None, reason
        b = find_blocker([pod], [], since=T0, now=T0 + 1 + grace)
        assert b is not None and b.category == "image-pull" and f"container app: {reason}" in b.reason


def test_a_reference_no_retry_can_pull_blocks_at_once() -> None:
    for reason in ("InvalidImageName", "ErrImageNeverPull"):
        b = find_blocker([_pod(waiting={"reason": reason, "message": "m"})], [], since=T0, now=T0 + 2)
        assert b is not None and b.category == "image-pull" and f"{reason}: m" in b.reason


def test_the_same_classifier_judges_init_containers_and_a_job_pod() -> None:
    cs = {"name": "migrate", "image": "r/m@sha256:2", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    assert waiting_blocker(cs, age_s=5) is None
    assert waiting_blocker(cs, age_s=31) == ("image-pull", "container migrate: ImagePullBackOff: r/m@sha256:2")
    cfg = {"name": "migrate", "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "no key"}}}
    assert waiting_blocker(cfg, age_s=3) is None
    assert waiting_blocker(cfg, age_s=11) == ("container-config",
                                              "container migrate: CreateContainerConfigError: no key")
    assert waiting_blocker({"name": "x", "state": {"running": {}}}, age_s=999) is None


def test_the_pull_error_shown_is_the_kubelets_newest_failed_event_for_that_pod() -> None:
    def ev(name: str, reason: str, message: str, at: str) -> Event:
        return Event("Pod", name, reason, message, "Warning", 1, at)

    events = [ev("p1", "Failed", "Failed to pull image \"r/x\": connection refused", "2026-01-01T00:00:01Z"),
              ev("p1", "BackOff", "Back-off pulling image \"r/x\"", "2026-01-01T00:00:02Z"),
              ev("p2", "Failed", "Failed to pull image \"r/y\": not found", "2026-01-01T00:00:03Z"),
              ev("p1", "Failed", "Failed to pull image \"r/x\": x509: unknown authority", "2026-01-01T00:00:04Z"),
              ev("p1", "Failed", "Error: ImagePullBackOff", "2026-01-01T00:00:05Z")]
    assert pull_error(events, "p1") == 'Failed to pull image "r/x": x509: unknown authority'
    assert pull_error(events, "p2").endswith("not found")
    assert pull_error(events, "p3") == ""


def test_a_crash_loop_blocks_with_the_exit_code() -> None:
    once = _pod(restarts=1, last={"exitCode": 2, "reason": "Error"})
    assert find_blocker([once], [], since=T0, now=T0 + 10) is None
    looping = _pod(waiting={"reason": "CrashLoopBackOff", "message": "back-off 10s"}, restarts=2,
                   last={"exitCode": 2, "reason": "Error"})
    b = find_blocker([looping], [], since=T0, now=T0 + 20)
    assert b is not None and b.category == "crash-loop" and "restarted 2 time(s), last exit code 2 (Error)" in b.reason


def test_a_config_error_blocks_after_its_grace() -> None:
    pod = _pod(waiting={"reason": "CreateContainerConfigError", "message": 'secret "veza-secrets" not found'})
    assert find_blocker([pod], [], since=T0, now=T0 + 4) is None
    b = find_blocker([pod], [], since=T0, now=T0 + 15)
    assert b is not None and b.category == "container-config" and "veza-secrets" in b.reason


def test_pods_of_the_previous_revision_and_terminating_pods_are_ignored() -> None:
    old = _pod(created=T0 - 600, waiting={"reason": "CrashLoopBackOff"}, restarts=9)
    leaving = _pod(waiting={"reason": "ImagePullBackOff"})
    leaving["metadata"]["deletionTimestamp"] = _iso(T0 + 3)
    assert find_blocker([old, leaving], [], since=T0, now=T0 + 30) is None


def test_thresholds_are_parameters() -> None:
    pod = _pod(conditions=_unschedulable("0/1 nodes are available: 1 Insufficient memory.", T0 + 1))
    assert find_blocker([pod], [], since=T0, now=T0 + 3, limits=Thresholds(unschedulable_grace_s=1)) is not None


# What the services log when /ready fails (services/*/kit/kit.go, services/chat-server/src/main.rs).
REFUSED = ('{"ts":"t","level":"error","msg":"not ready","checks":{"postgres":"credentials rejected: password '
           'authentication failed for user \\"veza\\" (SQLSTATE 28P01)","redis":"ok"},"rejected":["postgres"]}')
TRANSIENT = ('{"ts":"t","level":"warn","msg":"not ready","checks":{"postgres":"dial tcp: connection refused"},'
             '"rejected":null}')
REQUEST = '{"ts":"t","level":"info","msg":"request","method":"GET","path":"/ready","status":503}'


def test_a_dependency_refusing_the_credentials_blocks_naming_it_and_why() -> None:
    pod = _pod("veza-veza-backend-api-1")
    b = find_blocker([pod], [], since=T0, now=T0 + 5, logs={pod["metadata"]["name"]: f"{REFUSED}\n{REQUEST}\n"})
    assert b is not None and b.category == "credentials-rejected"
    assert b.line() == ('Pod veza-veza-backend-api-1: credentials-rejected: not Ready: postgres: password '
                        'authentication failed for user "veza" (SQLSTATE 28P01)')


def test_a_transient_readiness_failure_or_a_ready_pod_is_no_blocker() -> None:
    pod = _pod("p")
    # The newest readiness record decides: a refusal followed by a transient failure (the DB restarting) waits.
    assert find_blocker([pod], [], since=T0, now=T0 + 5, logs={"p": f"{REFUSED}\n{TRANSIENT}\n{REQUEST}"}) is None
    assert find_blocker([pod], [], since=T0, now=T0 + 5, logs={"p": "not json\n" + REQUEST}) is None
    ready = _pod("p", conditions=[{"type": "Ready", "status": "True"}])
    ready["status"]["containerStatuses"] = [{"name": "app", "state": {"running": {}}, "restartCount": 0}]
    assert find_blocker([ready], [], since=T0, now=T0 + 5, logs={"p": REFUSED}) is None
    # A pod of the previous revision is not this deploy's fault.
    old = _pod("p", created=T0 - 100)
    assert find_blocker([old], [], since=T0, now=T0 + 5, logs={"p": REFUSED}) is None


def test_the_chat_servers_refusal_record_is_read_the_same_way() -> None:
    line = ('{"ts":"t","level":"error","msg":"not ready","checks":{"nats":"credentials rejected: -ERR '
            '\'Authorization Violation\'","subscription":"not subscribed: -ERR \'Authorization Violation\'"},'
            '"rejected":["nats"]}')
    b = find_blocker([_pod("c")], [], since=T0, now=T0 + 5, logs={"c": line})
    assert b is not None and b.reason == "not Ready: nats: -ERR 'Authorization Violation'"
