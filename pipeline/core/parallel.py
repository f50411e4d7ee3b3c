"""Work on a few threads that stops when the user presses Ctrl-C.

`ThreadPoolExecutor`'s context manager waits, on any exception, for every task it was given, queued ones
included: a Ctrl-C while three of five builds run starts the other two and waits for all five. `run_parallel`
drops the queued tasks on Ctrl-C and sets a `stop` event the running ones watch (a tool's `proc.stream(stop=…)`,
an engine stream checked between messages), so Ctrl-C ends the work within a moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")


def run_parallel(items: Sequence[T], work: Callable[[T], R], stop: threading.Event, *, max_workers: int,
                 name: str = "work") -> list[R]:
    """work(item) for every item on up to `max_workers` threads (named `name`-N); returns the results in order.

    The first error is raised once every started task has ended (the others still run to their end, as before).
    On KeyboardInterrupt in the calling thread: `stop` is set, the tasks not started are dropped (a queued task
    that a thread picks up after that returns at once), the running ones are waited for (they must watch
    `stop`), and the KeyboardInterrupt is raised again. The running tasks are counted by the tasks themselves:
    a Ctrl-C can land while the pool is still starting a thread, before the pool would join it."""
    running = 0
    changed = threading.Condition()

    def task(item: T) -> R | None:
        nonlocal running
        with changed:
            if stop.is_set():
                return None
            running += 1
        try:
            return work(item)
        finally:
            with changed:
                running -= 1
                changed.notify_all()

    pool = ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items))), thread_name_prefix=name)
    try:
        futures = [pool.submit(task, item) for item in items]
        return [cast(R, f.result()) for f in futures]
    except KeyboardInterrupt:
        with changed:
            stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        with changed:
            changed.wait_for(lambda: running == 0)
        raise
    finally:
        pool.shutdown(wait=True)
