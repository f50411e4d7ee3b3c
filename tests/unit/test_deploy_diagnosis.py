"""What a failed deploy's message says about pods that are not Ready: every dependency their own readiness record
names (pipeline/stages/deploy/diagnosis.py readiness_causes), whatever the dependency and whether it refused the
credentials or did not answer — the kubelet's probe event says only "503"."""

from __future__ import annotations

from pipeline.stages.deploy.diagnosis import readiness_causes, readiness_record

REQUEST = '{"ts":"t","level":"info","msg":"request","method":"GET","path":"/ready","status":503}'


def _not_ready(checks: str, rejected: str = "null") -> str:
    return f'{{"ts":"t","level":"warn","msg":"not ready","checks":{checks},"rejected":{rejected}}}'


def test_every_failing_check_is_named_refused_or_not() -> None:
    logs = {
        "api-1": "starting\n" + _not_ready('{"postgres":"schema at version 1, this build needs 2","redis":"ok"}')
        + "\n" + REQUEST,
        "api-2": _not_ready('{"postgres":"credentials rejected: password authentication failed for user \\"veza\\" '
                            '(SQLSTATE 28P01)","redis":"dial tcp 10.0.0.9:6379: connect: connection refused"}',
                            '["postgres"]'),
        "chat-1": _not_ready('{"nats":"nats: no servers available for connection"}'),
        "stream-1": _not_ready('{"volume":"volume not writable: open /app/streams/.ready-1: read-only file system"}'),
    }
    assert readiness_causes(logs) == [
        "pod api-1 not Ready: postgres: schema at version 1, this build needs 2",
        'pod api-2 not Ready: postgres: password authentication failed for user "veza" (SQLSTATE 28P01); '
        "redis: dial tcp 10.0.0.9:6379: connect: connection refused",
        "pod chat-1 not Ready: nats: nats: no servers available for connection",
        "pod stream-1 not Ready: volume: volume not writable: open /app/streams/.ready-1: read-only file system",
    ]


def test_the_newest_record_decides_and_pods_without_one_are_left_out() -> None:
    healed_then_failed = (_not_ready('{"postgres":"dial tcp: connection refused"}') + "\n"
                          + _not_ready('{"postgres":"ok","redis":"NOAUTH Authentication required."}'))
    assert readiness_causes({"p": healed_then_failed, "q": "no json at all\n" + REQUEST,
                             "r": "(no log: container waiting: ImagePullBackOff)"}) == \
        ["pod p not Ready: redis: NOAUTH Authentication required."]
    assert readiness_record(REQUEST) is None
    assert readiness_record(_not_ready('{"redis":"x"}', '["redis"]')) == ({"redis": "x"}, ["redis"])
