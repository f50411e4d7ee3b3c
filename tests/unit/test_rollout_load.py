"""The rollout's load loop (pipeline/stages/deploy/load.py) against a real HTTP server on 127.0.0.1 (a port the
kernel chooses):
loopback only, paced at its rate, bounded by max_requests, every answer counted by status."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pipeline.core.config_rollout import Load
from pipeline.core.errors import UsageError
from pipeline.stages.deploy.load import LoadLoop, check_loopback


def unused_port() -> int:
    """A loopback port nothing listens on, chosen by the kernel (no fixed range: this file runs beside other
    copies of the suite, e.g. the ci-local e2e's lint job, whose workers would share a fixed one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            code = 500 if len(seen) % 5 == 0 else 200    # a fifth of the answers are errors
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("url", ["http://10.0.0.12:8080", "http://example.org", "http://172.17.0.5",
                                 "ftp://127.0.0.1/", "http://localhost:80"])
def test_only_a_loopback_address_is_a_target(url: str) -> None:
    with pytest.raises(UsageError) as err:
        LoadLoop(url, Load())
    assert "not a loopback address" in err.value.message and err.value.hint
    check_loopback("http://127.0.0.1:9")
    check_loopback("http://[::1]:9")


def test_the_loop_is_paced_counts_every_answer_and_stops(server: tuple[str, list[str]]) -> None:
    url, seen = server
    seen.clear()
    with LoadLoop(url, Load(rps=20.0, paths=("/health", "/ready"), max_requests=1000)) as loop:
        time.sleep(1.0)
    rec = loop.record
    assert 10 <= rec.requests <= 22, rec           # about 20 in a second, never a burst above the rate
    assert rec.requests == len(seen) == sum(rec.by_status.values())
    assert rec.by_status[500] == len(seen) // 5 and rec.by_status[200] == rec.requests - rec.by_status[500]
    assert seen[:2] == ["/health", "/ready"]       # the paths in turn
    assert rec.as_dict()["by_status"] == {str(k): v for k, v in sorted(rec.by_status.items())}
    time.sleep(0.3)
    assert len(seen) == rec.requests               # nothing after the block


def test_max_requests_bounds_the_loop_whatever_the_duration(server: tuple[str, list[str]]) -> None:
    url, seen = server
    seen.clear()
    with LoadLoop(url, Load(rps=50.0, max_requests=7)) as loop:
        time.sleep(0.6)
    assert loop.record.requests == len(seen) == 7


def test_no_answer_is_counted_as_status_0() -> None:
    with LoadLoop(f"http://127.0.0.1:{unused_port()}", Load(rps=20.0, max_requests=3)) as loop:
        time.sleep(0.5)
    assert loop.record.by_status == {0: 3}
