"""Loopback registry stand-ins for the error tests (ports 127.0.0.1:19100-19199, issue 16's range).

`ScriptedRegistry` answers each request from a script of canned distribution-spec answers (status, error
code, headers), one per request, then 200 {} — a registry that throttles, is unavailable, refuses, or
resets the connection mid-answer. `ThrottlingProxy` forwards every request to a real registry, but answers
the first `throttle` manifest PUTs with 429 TOOMANYREQUESTS (and a Retry-After), as a rate-limited registry
does: a real engine push goes through it.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.ports import PortPool

PORTS = range(19100, 19200)
free_port = PortPool(PORTS).take


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


@dataclass
class Answer:
    status: int
    code: str = ""                 # distribution error code for the JSON body ("" = no body)
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False            # send half the headers, then reset the connection (RST)


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _LoopbackServer:
    """An HTTP server on a free loopback port of this area, served from a daemon thread until close()."""

    server: ThreadingHTTPServer

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ScriptedRegistry(_LoopbackServer):
    def __init__(self, script: list[Answer]) -> None:
        self.script = list(script)
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                outer.seen.append(f"{self.command} {self.path}")
                ans = outer.script.pop(0) if outer.script else Answer(200)
                if ans.reset:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Le")
                    self.wfile.flush()
                    _reset(self.connection)
                    self.close_connection = True
                    return
                data = error_body(ans.code, f"{ans.code.lower()} (stand-in)") if ans.code else b"{}"
                self.send_response(ans.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                for k, v in ans.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        self._serve(Handler)


class ThrottlingProxy(_LoopbackServer):
    """HTTP proxy to a real registry; the first `throttle` manifest PUTs get 429 TOOMANYREQUESTS."""

    def __init__(self, target_port: int, throttle: int = 1, retry_after: str = "1") -> None:
        self.target_port = target_port
        self.throttle = throttle
        self.throttled = 0
        self.forwarded = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _forward(self) -> None:
                data = self._body()
                if self.command == "PUT" and "/manifests/" in self.path and outer.throttled < outer.throttle:
                    outer.throttled += 1
                    payload = error_body("TOOMANYREQUESTS", "Rate exceeded")
                    self.send_response(429)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", outer.target_port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "content-length", "connection")}
                headers["Content-Length"] = str(len(data))
                conn.request(self.command, self.path, body=data if data or self.command in ("PUT", "POST",
                                                                                           "PATCH") else None,
                             headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                outer.forwarded += 1
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection", "date", "server"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self._serve(Handler)
