"""Issue 16, registry errors: real distribution-spec error answers from a loopback stand-in, then a real push
through a throttling proxy in front of a real registry (docker-registry). Ports 127.0.0.1:19100-19199."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import RegistryAuthError
from pipeline.core.retry import Attempts, RetryPolicy, with_retries
from pipeline.local.registry import LocalRegistry
from pipeline.tools.registry_api import RegistryClient, RegistryRequestError, RegistryUnavailable, split_repository
from tests.integration.registry.standin import Answer, ScriptedRegistry, ThrottlingProxy
from tests.integration.registry_fixtures import make_manifest, run_push, write_config

POLICY = RetryPolicy(attempts=5, ceiling_s=0.2, base_s=0.05)


def _run(script: list[Answer], call: str = "ping", policy: RetryPolicy = POLICY) -> tuple[Attempts, float, Any]:
    reg = ScriptedRegistry(script)
    client = RegistryClient(reg.address, scheme="http", timeout=10)
    counter = Attempts()
    started = time.monotonic()
    try:
        op = client.ping if call == "ping" else (lambda: client.check_push_access("veza/api"))
        try:
            result: Any = with_retries(op, policy, counter)
        except Exception as exc:  # the test inspects what came out
            result = exc
    finally:
        reg.close()
    return counter, time.monotonic() - started, result


def test_throttled_then_unavailable_then_ok_is_retried_honouring_retry_after() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)   # whole seconds: 2-3 s away
    counter, took, result = _run([
        Answer(429, "TOOMANYREQUESTS", {"Retry-After": "1"}),
        Answer(503, "UNAVAILABLE", {"Retry-After": soon}),
        Answer(200),
    ])
    assert result == 200 and counter.tries == 3 and counter.retries == 2
    assert took >= 1.9   # 1 s asked in seconds, then the rest of the 2-3 s to the HTTP-date


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_without_a_body_are_retried(status: int) -> None:
    counter, _, result = _run([Answer(status), Answer(200)])
    assert result == 200 and counter.tries == 2


def test_code_in_any_case_wins_over_the_status() -> None:
    counter, _, result = _run([Answer(403, "toomanyrequests", {"Retry-After": "0"}), Answer(200)])
    assert result == 200 and counter.tries == 2


@pytest.mark.parametrize(("status", "code", "error"), [
    (403, "DENIED", RegistryAuthError), (401, "UNAUTHORIZED", RegistryAuthError),
    (404, "NAME_UNKNOWN", RegistryRequestError), (400, "NAME_INVALID", RegistryRequestError),
    (400, "MANIFEST_INVALID", RegistryRequestError), (405, "UNSUPPORTED", RegistryRequestError),
])
def test_permanent_codes_fail_after_one_try(status: int, code: str, error: type[Exception]) -> None:
    counter, _, result = _run([Answer(status, code), Answer(202)], call="push-access")
    assert isinstance(result, error) and counter.tries == 1
    assert code in str(result)


def test_connection_reset_mid_answer_is_retried() -> None:
    counter, _, result = _run([Answer(200, reset=True), Answer(200, reset=True), Answer(200)])
    assert result == 200 and counter.tries == 3


def test_a_retry_after_longer_than_the_policy_fails_at_once_saying_so() -> None:
    counter, took, result = _run([Answer(429, "TOOMANYREQUESTS", {"Retry-After": "3600"}), Answer(200)])
    assert isinstance(result, RegistryUnavailable) and counter.tries == 1 and took < 5
    assert "TOOMANYREQUESTS: toomanyrequests (stand-in) (Retry-After 3600s)" in result.message


@pytest.mark.engine
@pytest.mark.registry
def test_real_push_through_a_throttling_registry_is_retried(tmp_path: Path, registry: LocalRegistry,
                                                            image_factory: Any, run_id: str) -> None:
    proxy = ThrottlingProxy(registry.port, throttle=1, retry_after="1")
    try:
        cfg = write_config(tmp_path / "pipeline.toml", registries={"dev": proxy.address}, namespace=run_id,
                           attempts=4, ceiling=0.5, services=("svc-a",))
        env = cfg.env("dev")
        img = image_factory("svc-a", env.repository(cfg.service("svc-a")), ["sha-abcdef1"])
        man = make_manifest(tmp_path / "manifest.json", cfg, "dev", [img])
        lines: list[str] = []
        res = run_push(None, "dev", config=cfg, manifest=man, log=lines.append)["svc-a"]
    finally:
        proxy.close()
    print("\n".join(lines))
    assert proxy.throttled == 1 and res["status"] == "pushed" and res["retries"] >= 1
    assert any("toomanyrequests" in line.lower() and "retrying in" in line for line in lines)
    _, repo = split_repository(img.repository)
    got = RegistryClient(registry.address).head_manifest(repo, "sha-abcdef1")   # the real registry, directly
    assert got is not None and got.digest == res["digest"]


@pytest.mark.parametrize(("answer", "error"), [
    (Answer(429, "TOOMANYREQUESTS"), RegistryUnavailable),
    (Answer(404, "NAME_UNKNOWN"), RegistryRequestError),
    (Answer(403, "DENIED"), RegistryAuthError),
])
def test_skopeo_failures_are_classified_by_code(answer: Answer, error: type[Exception]) -> None:
    from pipeline.tools import skopeo

    if not skopeo.available():
        pytest.skip("skopeo is not installed (the bootstrap installs it)")
    reg = ScriptedRegistry([Answer(200)] + [answer] * 20)   # /v2/ ping, then every request refused
    try:
        with pytest.raises(error) as exc:
            skopeo.copy(f"{reg.address}/veza/api:1.0.0", f"{reg.address}/veza/api:copy", credentials={}, timeout=60)
    finally:
        reg.close()
    assert answer.code.lower().replace("_", " ") in str(exc.value).lower()


@pytest.mark.parametrize(("answer", "transient"), [(Answer(429, "TOOMANYREQUESTS"), True),
                                                   (Answer(404, "NAME_UNKNOWN"), False)])
def test_trivy_db_download_failures_are_classified_by_code(tmp_path: Path, answer: Answer, transient: bool) -> None:
    from pipeline.core.errors import StageFailed
    from pipeline.tools import trivy

    reg = ScriptedRegistry([answer] * 50)
    try:
        with pytest.raises(StageFailed) as exc:
            trivy.download_db(f"{reg.address}/trivy/db", tmp_path / "cache", timeout=120)
    finally:
        reg.close()
    assert isinstance(exc.value, RegistryUnavailable) is transient, exc.value.message
