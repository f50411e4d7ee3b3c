"""Network probes of a running stack: HTTP requests and a minimal NATS subscriber (no subprocess).

The NATS client speaks the text protocol directly (INFO, CONNECT, SUB, PING/PONG, MSG): the smoke test
needs to observe one message, and a raw client has no dependency that could drift from the server.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    content_type: str = ""
    error: str = ""           # connection-level failure (refused, reset, timeout)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def summary(self, limit: int = 160) -> str:
        if self.error:
            return self.error
        body = " ".join(self.text.split())
        return f"HTTP {self.status}, body {body[:limit]!r}" + ("…" if len(body) > limit else "")


def http(method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> HttpAnswer:
    """One HTTP request; never raises for HTTP or connection errors (they are answers to report)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpAnswer(resp.status, resp.read(MAX_BODY), resp.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, exc.read(MAX_BODY) if exc.fp else b"", exc.headers.get("Content-Type", ""))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return HttpAnswer(0, b"", error=f"no HTTP answer from {url}: {reason}")


class NatsError(Exception):
    pass


class NatsSubscriber:
    """Subscribe to a subject (wildcards allowed) on a NATS server and wait for a matching message."""

    def __init__(self, host: str, port: int, subject: str = ">", *, timeout: float = 5.0) -> None:
        self.address = f"{host}:{port}"
        self.subject = subject
        self._buf = b""
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise NatsError(f"cannot connect to NATS at {self.address}: {exc}") from None
        try:
            info = self._line(time.monotonic() + timeout)
            if not info.startswith(b"INFO "):
                raise NatsError(f"NATS at {self.address} did not greet with INFO (got {info[:80]!r})")
            self._send(b'CONNECT {"verbose":false,"pedantic":false,"name":"veza-pipeline-check","lang":"python",'
                       b'"version":"1","protocol":1}\r\n')
            self._send(f"SUB {subject} 1\r\nPING\r\n".encode())
            # PONG after our PING proves the server processed CONNECT and SUB: no message can be missed.
            deadline = time.monotonic() + timeout
            while True:
                line = self._line(deadline)
                if line == b"PONG":
                    break
                if line.startswith(b"-ERR"):
                    raise NatsError(f"NATS at {self.address} refused the subscription: {line.decode()}")
                if line == b"PING":
                    self._send(b"PONG\r\n")
        except BaseException:
            self.close()
            raise

    def _send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self._sock.settimeout(left)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise TimeoutError from None
        if not chunk:
            raise NatsError(f"NATS at {self.address} closed the connection")
        self._buf += chunk

    def _line(self, deadline: float) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill(deadline)
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def _exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n + 2:
            self._fill(deadline)
        data, self._buf = self._buf[:n], self._buf[n + 2:]
        return data

    def publish(self, subject: str, payload: bytes) -> None:
        """PUB one message on `subject` (a functional check's own message, to see the service receive it)."""
        self._send(f"PUB {subject} {len(payload)}\r\n".encode() + payload + b"\r\n")

    def wait_for(self, needle: bytes, timeout: float) -> tuple[str, bytes] | None:
        """The first message whose payload contains needle, as (subject, payload); None on timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                line = self._line(deadline)
                if line.startswith(b"MSG "):
                    # MSG <subject> <sid> [reply-to] <#bytes>
                    parts = line.split()
                    payload = self._exact(int(parts[-1]), deadline)
                    if needle in payload:
                        return parts[1].decode(), payload
                elif line == b"PING":
                    self._send(b"PONG\r\n")
                elif line.startswith(b"-ERR"):
                    raise NatsError(f"NATS at {self.address}: {line.decode()}")
        except TimeoutError:
            return None

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> NatsSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
