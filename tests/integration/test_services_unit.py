"""The services' own unit tests, offline: the vendored libraries are all they need.

- Go (services/backend-api/*_test.go): Debian's Go, which the bootstrap installs, with `-mod=vendor` and
  GOPROXY=off (a missing module fails instead of being fetched); its build cache makes a rerun take seconds
  (the image build with Go 1.27 and no network is tests/integration/test_services_images.py's).
- Rust (the chat server's #[cfg(test)]): in the offline builder image `invoke bases` makes (Debian's cargo is not
  on the host), with no network: one container (label veza.pipeline.run), sources mounted read-only, removed after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import Any

import pytest

from pipeline.core.config import load_config
from pipeline.core.paths import ROOT
from pipeline.core.vocab import LABEL_RUN
from pipeline.local.bases import ensure_bases

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _run_offline(docker_client: Any, base: str, context: str, command: list[str], env: dict[str, str]) -> str:
    cfg = load_config()
    ensure_bases(config=cfg, say=lambda _line: None)
    run = "u" + uuid.uuid4().hex[:8]
    c = docker_client.containers.run(
        cfg.bases[base].local, command, detach=True, network_mode="none", working_dir="/src", environment=env,
        volumes={str(ROOT / context): {"bind": "/src", "mode": "ro"}}, labels={LABEL_RUN: run})
    try:
        code = c.wait(timeout=900)["StatusCode"]
        out = c.logs().decode(errors="replace")
        assert code == 0, f"{' '.join(command)} exited {code} (no network):\n{out[-4000:]}"
        return out
    finally:
        c.remove(force=True, v=True)


def test_backend_api_go_tests_pass_offline_with_the_vendored_libraries() -> None:
    go = shutil.which("go") or "/usr/bin/go"
    res = subprocess.run([go, "test", "-count=1", "-v", "./..."], cwd=ROOT / "services/backend-api",
                         env={**os.environ, "GOFLAGS": "-mod=vendor", "GOPROXY": "off"},
                         capture_output=True, text=True, timeout=600, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "--- PASS: TestVerifierRefusesForgedExpiredUnsignedAndOtherAlgorithms" in out, out
    assert "--- PASS: TestTerminationDrainsForTheDelayThenShutsDown" in out, out
    assert "ok  \tveza/backend-api" in out, out


def test_chat_server_rust_tests_pass_offline(docker_client: Any) -> None:
    out = _run_offline(docker_client, "rust", "services/chat-server",
                       ["cargo", "test", "--offline", "--locked"], {"CARGO_TARGET_DIR": "/tmp/target"})
    assert "test tests::refused_credentials_are_permission_denied_other_errors_are_not ... ok" in out, out
    assert "test result: ok. 5 passed" in out, out
    assert "test tests::draining_ready_answers_503_without_asking_nats ... ok" in out, out
