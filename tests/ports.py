"""Loopback ports for tests: each test area owns a range, so areas never fight over a port."""

from __future__ import annotations

import socket
import threading


class PortPool:
    """Hands out ports of one range that nothing listens on, each at most once per test session."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            for p in self.ports:
                if p in self._used:
                    continue
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        s.bind(("127.0.0.1", p))
                    except OSError:
                        continue
                self._used.add(p)
                return p
        raise RuntimeError(f"no free port left in 127.0.0.1:{self.ports.start}-{self.ports.stop - 1}")
