"""Smoke failures: a crash on start, a service never healthy, a wrong body — each exits 4 with a precise
message and saved logs, and leaves nothing labelled by the run. Interrupts (SIGINT/SIGTERM) mid-run too."""

from __future__ import annotations

import json
import signal

import pytest

from tests.integration.smoke_fixtures import *  # noqa: F403 - the pytest fixtures
from tests.integration.smoke_fixtures import OVERRIDES, SmokeRun, interrupt, wait_for_containers

pytestmark = [pytest.mark.engine, pytest.mark.slow]
STACK = ("backend-api", "chat-server", "stream-server", "docs", "postgres", "redis", "nats")


def _assert_logs_saved(run: SmokeRun, culprit: str, needle: str) -> None:
    logs = run.run_dir / "logs"
    for svc in STACK:
        assert (logs / f"{svc}.log").is_file(), f"no saved log for {svc}"
    assert needle in (logs / f"{culprit}.log").read_text(), f"{culprit}.log lacks {needle!r}"
    states = {s["service"]: s for s in json.loads((logs / "containers.json").read_text())}
    assert culprit in states


def _assert_failed_in_manifest(run: SmokeRun, culprit_service: str) -> dict[str, object]:
    m = run.manifest()
    stage = m["stages"]["smoke"]
    assert stage["status"] == "failed" and stage["run_id"] == run.run_id
    assert m["services"][culprit_service]["smoke"]["status"] == "fail"
    return dict(stage)


def test_service_crashing_on_start_exits_4(smoke_run: SmokeRun) -> None:
    smoke_run.overrides.append(OVERRIDES / "crash-stream-server.yml")
    rc, out = smoke_run.invoke(wait_timeout=60)
    assert rc == 4, out
    assert "error: smoke: service stream-server exited with code 2 while the stack was starting" in out, out
    assert "MAX_UPLOAD_BYTES must be a positive integer" in out      # what it got: its last log line
    _assert_logs_saved(smoke_run, "stream-server", "MAX_UPLOAD_BYTES must be a positive integer")
    _assert_failed_in_manifest(smoke_run, "veza-stream-server")
    assert smoke_run.leftovers() == ""


def test_service_never_healthy_exits_4_after_the_timeout(smoke_run: SmokeRun) -> None:
    smoke_run.overrides.append(OVERRIDES / "never-healthy-docs.yml")
    rc, out = smoke_run.invoke(wait_timeout=20)
    assert rc == 4, out
    assert "error: smoke: service docs did not become healthy within 20s (still starting)" in out, out
    assert "veza-docs-no-such-healthcheck" in out      # the healthcheck's own output says why
    _assert_logs_saved(smoke_run, "docs", '"msg":"listening"')
    _assert_failed_in_manifest(smoke_run, "veza-docs")
    assert smoke_run.leftovers() == ""


def test_service_turning_unhealthy_exits_4_without_waiting_for_the_timeout(smoke_run: SmokeRun) -> None:
    smoke_run.overrides.append(OVERRIDES / "unhealthy-docs.yml")
    rc, out = smoke_run.invoke(wait_timeout=120)
    assert rc == 4, out
    assert "error: smoke: service docs is unhealthy (its healthcheck failed): exit -1: " in out, out
    assert "veza-docs-no-such-healthcheck" in out
    stage = _assert_failed_in_manifest(smoke_run, "veza-docs")
    assert float(stage["timings"]["up_s"]) < 60     # reported when it happened, not at the timeout
    _assert_logs_saved(smoke_run, "docs", '"msg":"listening"')
    assert smoke_run.leftovers() == ""


def test_smoke_without_a_manifest_is_one_clear_line(smoke_run: SmokeRun) -> None:
    smoke_run.manifest_path.unlink()
    rc, out = smoke_run.invoke()
    assert rc == 2, out
    assert out.strip().splitlines()[-1] == (f"error: environment local has no Release manifest yet "
                                            f"({smoke_run.manifest_path}) (fix: run `invoke build --env local` "
                                            "first)"), out
    assert smoke_run.leftovers() == ""


def test_probe_with_wrong_body_exits_4(smoke_run: SmokeRun) -> None:
    docs = smoke_run.manifest()["services"]["veza-docs"]["build"]["image_id"]
    broken = smoke_run.build_image(
        f"veza-smoke-test/docs-wrong-body:{smoke_run.run_id}",
        f"FROM {docs}\nCOPY index.html /app/site/index.html\n",
        {"index.html": "<html><body>placeholder page</body></html>\n"})
    smoke_run.use_image("veza-docs", broken)
    rc, out = smoke_run.invoke()
    assert rc == 4, out
    assert ("error: smoke probe failed: veza-docs GET /: expected HTTP 200 with body containing 'Veza', "
            "got HTTP 200, body '<html><body>placeholder page</body></html>'") in out, out
    _assert_logs_saved(smoke_run, "docs", '"path":"/"')
    stage = _assert_failed_in_manifest(smoke_run, "veza-docs")
    assert "veza-docs GET /" in str(stage["failure"])
    m = smoke_run.manifest()
    assert m["services"]["veza-docs"]["smoke"]["image"] == broken
    assert m["services"]["veza-backend-api"]["smoke"]["status"] == "pass"
    assert smoke_run.leftovers() == ""


def test_a_ready_service_whose_data_path_is_broken_fails_its_functional_check_exits_4(smoke_run: SmokeRun) -> None:
    """stream-server is healthy and ready (its volume is writable) but refuses every upload: only the
    blob-roundtrip check sees it."""
    smoke_run.overrides.append(OVERRIDES / "upload-limit-stream-server.yml")
    rc, out = smoke_run.invoke()
    assert rc == 4, out
    assert "error: smoke probe failed: veza-stream-server PUT+GET /streams/{id}: expected the same 49152 bytes " \
           "back; an unknown id 404, got PUT answered" in out, out
    assert "ok   veza-stream-server   GET /ready" in out, out
    checks = {c["name"]: c["ok"] for c in smoke_run.manifest()["services"]["veza-stream-server"]["smoke"]["checks"]}
    assert checks["PUT+GET /streams/{id}"] is False and checks["GET /ready"] is True
    assert smoke_run.leftovers() == ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_run_tears_everything_down(smoke_run: SmokeRun, sig: signal.Signals) -> None:
    p = smoke_run.start()
    wait_for_containers(smoke_run, at_least=3)    # the stack is being created: interrupt now
    rc, out = interrupt(p, sig)
    assert rc == 130, out
    assert smoke_run.leftovers() == "", out
    stage = smoke_run.manifest()["stages"]["smoke"]
    assert stage["status"] == "interrupted"
    assert not (smoke_run.run_dir / "compose.env").exists()


def test_keep_on_failure_leaves_the_stack_for_debugging(smoke_run: SmokeRun) -> None:
    smoke_run.overrides.append(OVERRIDES / "crash-stream-server.yml")
    rc, out = smoke_run.invoke("--keep-on-failure", wait_timeout=60)
    assert rc == 4, out
    assert "kept for debugging" in out and "down --volumes" in out
    left = smoke_run.leftovers()
    assert "containers:" in left and "volumes:" in left, left
    assert smoke_run.manifest()["stages"]["smoke"]["kept"] is True
    # (the fixture removes what the kept run left)
