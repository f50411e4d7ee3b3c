"""The nats-publish check against a real NATS server (the infra image `invoke bases` builds): a chat service that
publishes every POST on NATS but lists what it was POSTed instead of what NATS delivers fails it, naming why.
(The real chat-server passes it in the smoke test: tests/integration/test_smoke_stack.py.) Before the check published
a message of its own on NATS, this service passed."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from pipeline.core.config import FunctionalCheck, Service, load_config
from pipeline.core.vocab import LABEL_RUN
from pipeline.stages.functional_checks import CheckTarget, service_checks
from pipeline.stages.probes import NatsError, NatsSubscriber
from tests.ports import PortPool

pytestmark = [pytest.mark.engine]

PORTS = PortPool(range(21150, 21170))   # this test area's loopback ports


@pytest.fixture(scope="module")
def nats(docker_client: Any) -> Iterator[tuple[str, int]]:
    from pipeline.local.bases import ensure_bases

    cfg = load_config()
    ensure_bases(config=cfg, say=lambda _line: None)
    port = PORTS.take()
    run = f"test-checks-nats-{uuid.uuid4().hex[:8]}"
    c = docker_client.containers.run(cfg.bases["nats"].local, detach=True, labels={LABEL_RUN: run},
                                     ports={"4222/tcp": ("127.0.0.1", port)})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                NatsSubscriber("127.0.0.1", port, "ping", timeout=2).close()
                break
            except (NatsError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield "127.0.0.1", port
    finally:
        c.remove(force=True)


def _echo_chat(nats: tuple[str, int]) -> ThreadingHTTPServer:
    """Publishes each POST on NATS (subject veza.chat.<room>) and lists what it was POSTed: it never subscribes."""
    posted: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_a: Any) -> None:
            pass

        def subject(self) -> str:
            return "veza.chat." + parse_qs(urlparse(self.path).query).get("room", ["x"])[0]

        def reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.reply(200, {"subject": self.subject(), "messages": posted})

        def do_POST(self) -> None:
            text = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            with NatsSubscriber(*nats, "unused", timeout=5) as conn:
                conn.publish(self.subject(), text.encode())
                conn.publish("unused", b"flush")
                conn.wait_for(b"flush", timeout=5)   # the server has handled the PUB before we answer
            posted.append(text)
            self.reply(201, {"subject": self.subject(), "payload": text})

    server = ThreadingHTTPServer(("127.0.0.1", PORTS.take()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_service_listing_what_it_was_posted_not_what_nats_delivers_fails_nats_publish(
        nats: tuple[str, int]) -> None:
    server = _echo_chat(nats)
    svc = Service(name="veza-chat-server", context=None, dockerfile=None, repository="r", port=8081,  # type: ignore[arg-type]
                  health_path="/health", ready_path="/ready", depends_on=(), bases=(), probes=())
    try:
        [c] = service_checks(svc, f"http://127.0.0.1:{server.server_address[1]}",
                             [FunctionalCheck("nats-publish", "/messages?room=pipeline-check")],
                             CheckTarget("run-1", 1.0, {}, nats))
    finally:
        server.shutdown()
        server.server_close()
    assert not c.ok
    assert c.got.startswith("a message the check published on NATS subject veza.chat.pipeline-check was not "
                            "listed: the service does not receive from NATS"), c.got
