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
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_parallel(items: Sequence[T], work: Callable[[T], R], stop: threading.Event, *, max_workers: int,
                 name: str = "work") -> list[R]:
    """work(item) for every item on up to `max_workers` threads (named `name`-N); returns the results in order.

    The first error is raised once every started task has ended (the others still run to their end, as before).
    On KeyboardInterrupt in the calling thread: `stop` is set, the tasks not started are dropped, the running
    ones are waited for (they must watch `stop`), and the KeyboardInterrupt is raised again."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items))), thread_name_prefix=name)
    try:
        futures = [pool.submit(work, item) for item in items]
        return [f.result() for f in futures]
    except KeyboardInterrupt:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
