"""Pure parts of the smoke stage: names, run ids, the env file, and the NATS protocol reader."""

from __future__ import annotations

import socket
import stat
import threading
from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.core.names import safe_run_id
from pipeline.core.redact import redact
from pipeline.local.stack_spec import (
    compose_service,
    image_var,
    new_secrets,
    read_env_file,
    write_env_file,
)
from pipeline.stages.probes import NatsError, NatsSubscriber


def test_names() -> None:
    assert image_var("veza-backend-api") == "BACKEND_API_IMAGE"
    assert image_var("postgres") == "POSTGRES_IMAGE"
    assert compose_service("veza-stream-server") == "stream-server"
    assert compose_service("nats") == "nats"


def test_run_ids_are_made_safe_for_compose_and_labels() -> None:
    assert safe_run_id("CI Job #12/x") == "ci-job-12-x"
    assert safe_run_id("smoke-20261125t181451-df0c0e") == "smoke-20261125t181451-df0c0e"
    assert len(safe_run_id("a" * 200)) == 48 and safe_run_id("a" * 200) != safe_run_id("a" * 201)
    with pytest.raises(UsageError):
        safe_run_id("///")


def test_env_file_is_0600_and_its_passwords_are_redacted(tmp_path: Path) -> None:
    values = new_secrets()
    f = write_env_file(tmp_path / "run" / "compose.env", {"VEZA_RUN_ID": "x", **values})
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert read_env_file(f) == {"VEZA_RUN_ID": "x", **values}
    for v in values.values():
        assert redact(f"password is {v}") == "password is ***"
    with pytest.raises(ValueError):
        write_env_file(tmp_path / "bad.env", {"A": "line\nbreak"})


def _fake_nats(script: list[bytes]) -> tuple[int, threading.Thread, list[bytes]]:
    """A one-connection TCP server that sends INFO, then the scripted chunks after our PING."""
    srv = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b'INFO {"server_id":"fake"}\r\n')
            buf = b""
            while b"PING\r\n" not in buf:
                buf += conn.recv(4096)
            received.append(buf)
            for chunk in script:
                conn.sendall(chunk)
            conn.recv(4096)   # wait for the client to close
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t, received


def test_nats_reader_handles_split_frames_pings_and_other_messages() -> None:
    port, t, received = _fake_nats([
        b"PONG\r\nPING\r\nMSG other.subject 1 5\r\nnoise\r\n",
        b"MSG veza.chat.smoke 1 _INBOX.x 1",           # a frame split across TCP segments
        b"1\r\nhello-", b"token\r\n",
    ])
    with NatsSubscriber("127.0.0.1", port, ">") as sub:
        assert sub.wait_for(b"token", timeout=3) == ("veza.chat.smoke", b"hello-token")
    t.join(3)
    assert b"SUB > 1\r\n" in received[0] and received[0].startswith(b"CONNECT ")


def test_nats_reader_times_out_and_reports_refusals() -> None:
    port, t, _ = _fake_nats([b"PONG\r\nMSG a 1 3\r\nabc\r\n"])
    with NatsSubscriber("127.0.0.1", port, ">") as sub:
        assert sub.wait_for(b"never", timeout=0.3) is None
    t.join(3)
    port, t, _ = _fake_nats([b"-ERR 'Permissions Violation for Subscription to >'\r\n"])
    with pytest.raises(NatsError, match="refused the subscription"):
        NatsSubscriber("127.0.0.1", port, ">")
    t.join(3)


def test_long_run_ids_stay_distinct() -> None:
    a = safe_run_id("local-7ca075e3-dirty-d1ffd42a-20261125t181451-df0c0e-smoke")
    b = safe_run_id("local-7ca075e3-dirty-d1ffd42a-20261125t181451-aa1111-smoke")
    assert len(a) == len(b) == 48 and a != b
