"""The embedded registry runs only as Debian's docker-registry binary: where the binary is missing, start() stops
with the install fix and starts nothing (no `registry:2` container, which would be an image pulled by a mutable
tag)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.core.errors import ToolMissing
from pipeline.local.registry import LocalRegistry
from pipeline.tools import proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_without_the_binary_start_names_the_package_and_runs_nothing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))   # no docker-registry, and no docker CLI to run a container with
    monkeypatch.setattr(proc, "TOOLS_BIN", empty)
    reg = LocalRegistry(_free_port(), root=tmp_path / "reg")
    with pytest.raises(ToolMissing) as exc:
        reg.start(timeout=2)
    assert "docker-registry" in str(exc.value) and "apt-get install -y docker-registry" in (exc.value.hint or "")
    assert not reg.answers() and not reg.running()
