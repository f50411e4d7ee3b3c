"""Ctrl-C during parallel work (bases, pushes): the queued pieces never start, the running ones are told to stop."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from pipeline.core.parallel import run_parallel


def test_ctrl_c_in_a_wave_wider_than_the_pool_starts_no_queued_base() -> None:
    started: list[str] = []
    stopped: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def work(name: str) -> None:
        with lock:
            started.append(name)
            if len(started) == 3:
                _thread.interrupt_main()     # the user's Ctrl-C, while three builds run and two wait
        if stop.wait(10):                    # a build that ends when told to (docker.build_image's stop)
            with lock:
                stopped.append(name)

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_parallel(["golang", "rust", "postgres", "redis", "nats"], work, stop, max_workers=3)
    assert stop.is_set()
    assert sorted(started) == ["golang", "postgres", "rust"]
    assert sorted(stopped) == sorted(started)
    assert time.monotonic() - t0 < 5


def test_every_piece_runs_and_the_first_error_is_raised_after_all_ended() -> None:
    ran: list[str] = []

    def work(name: str) -> None:
        time.sleep(0.05)
        ran.append(name)
        if name == "rust":
            raise RuntimeError("rust failed")

    with pytest.raises(RuntimeError, match="rust failed"):
        run_parallel(["golang", "rust", "postgres", "redis", "nats"], work, threading.Event(), max_workers=3)
    assert sorted(ran) == ["golang", "nats", "postgres", "redis", "rust"]


def test_results_come_in_the_order_of_the_items() -> None:
    assert run_parallel([3, 1, 2], lambda n: (time.sleep(n / 100), n * 10)[1], threading.Event(), max_workers=3) \
        == [30, 10, 20]
