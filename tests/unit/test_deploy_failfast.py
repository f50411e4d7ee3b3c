"""Fail fast: which pod states cannot recover during a deploy, judged from Pod/PVC objects as the API gives them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.stages.deploy.failfast import Thresholds, find_blocker

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


def test_an_image_that_cannot_be_pulled_blocks_at_once() -> None:
    pod = _pod(waiting={"reason": "ImagePullBackOff", "message": 'Back-off pulling image "r/x@sha256:1"'})
    b = find_blocker([pod], [], since=T0, now=T0 + 3)
    assert b is not None and b.category == "image-pull" and "container app: ImagePullBackOff" in b.reason
    assert find_blocker([_pod(waiting={"reason": "ErrImagePull"})], [], since=T0, now=T0 + 3) is not None


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
