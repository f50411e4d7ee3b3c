"""Loopback ports for tests: each test area owns a range, so areas never fight over a port."""

from __future__ import annotations

import os
import socket
import threading


def worker_share(ports: range) -> range:
    """This pytest-xdist worker's share of `ports`: every n-th port, from its index (gw0, gw1, ...), so two
    workers never pick the same port in the moment between the free-port check and the bind; the whole range
    outside xdist."""
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return ports[index % n::n] if n > 1 else ports


def worker_block(ports: range) -> range:
    """This pytest-xdist worker's contiguous block of `ports` (for a setting that takes one LO-HI range, like
    VEZA_PORT_FORWARD_PORTS): the range cut into as many blocks as there are workers; the whole range outside."""
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = (int(worker[2:]) if worker[2:].isdigit() else 0) % n
    size = len(ports) // n
    return ports[index * size:(index + 1) * size] if n > 1 else ports


def first_free(ports: range, host: str = "127.0.0.1") -> int:
    """The first port of `ports` nothing listens on at `host` (a test area's own range; no memory between calls:
    PortPool when a session must not hand one out twice). RuntimeError naming the range when all are taken."""
    for p in ports:
        with socket.socket() as s:
            try:
                s.bind((host, p))
            except OSError:
                continue
        return p
    raise RuntimeError(f"no free port in {host}:{ports.start}-{ports.stop - 1}")


class PortPool:
    """Hands out ports of one range that nothing listens on, each once per test session while fresh ones are left,
    then any that is free again (under pytest-xdist, of this worker's share of the range: worker_share)."""

    def __init__(self, ports: range) -> None:
        self.ports = worker_share(ports)
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            for fresh_only in (True, False):   # once every port was handed out: any that is free again
                for p in self.ports:
                    if fresh_only and p in self._used:
                        continue
                    with socket.socket() as s:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        try:
                            s.bind(("127.0.0.1", p))
                        except OSError:
                            continue
                    self._used.add(p)
                    return p
        raise RuntimeError(f"no free port left in 127.0.0.1:{self.ports.start}-{self.ports.stop - 1}"
                           f"{f' (this worker share: step {self.ports.step})' if self.ports.step > 1 else ''}")
