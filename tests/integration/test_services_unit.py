"""The services' own unit tests (Go: services/backend-api/*_test.go; Rust: the chat server's #[cfg(test)]), run in
the offline builder images `invoke bases` makes, with no network: the vendored libraries are all they need.

Each test runs one container (label veza.pipeline.run) with the service's sources mounted read-only, and removes it.
"""

from __future__ import annotations

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


def test_backend_api_go_tests_pass_offline_with_the_vendored_libraries(docker_client: Any) -> None:
    out = _run_offline(docker_client, "golang", "services/backend-api", ["go", "test", "-count=1", "-v", "./..."],
                       {"GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GOCACHE": "/tmp/go-cache"})
    assert "--- PASS: TestVerifierRefusesForgedExpiredUnsignedAndOtherAlgorithms" in out, out
    assert "ok  \tveza/backend-api" in out, out


def test_chat_server_rust_tests_pass_offline(docker_client: Any) -> None:
    out = _run_offline(docker_client, "rust", "services/chat-server",
                       ["cargo", "test", "--offline", "--locked"], {"CARGO_TARGET_DIR": "/tmp/target"})
    assert "test tests::refused_credentials_are_permission_denied_other_errors_are_not ... ok" in out, out
    assert "test result: ok. 3 passed" in out, out
