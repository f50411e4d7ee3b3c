"""Progress of long work (base images, the local cluster's build and start, large pushes) as reporter steps.

Long work outside a service's build reports through a `Progress` callback, `progress(piece, text, state)`:
`piece` names one piece of work ("nats", "kubernetes build"), `text` its last step, `state` is running, then
done or failed. `reporter_progress(reporter, group)` turns it into `Reporter.step(group, piece, text, state)`,
so the live view shows one updating line per piece (what, state, elapsed, last step) and prints a permanent
line only for the result; without a terminal, `PlainReporter` prints one line per event, its running steps
throttled by `EventThrottle` to at most one line per piece per minute (no heartbeat spam in CI logs): long work
outside a stage shows its first step at once, a stage's service (a large push) only once it has run a minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.core.reporter import Reporter

Progress = Callable[[str, str, str], None]   # (piece, text, state: running | done | failed)

PLAIN_PROGRESS_INTERVAL_S = 60.0   # at most one running line per piece of work per minute without a terminal


def reporter_progress(reporter: Reporter, group: str) -> Progress:
    """A Progress that reports each piece as a step of `group` ("bases", "cluster") on `reporter`."""

    def progress(piece: str, text: str, state: str) -> None:
        reporter.step(group, piece, text, state)

    return progress


class EventThrottle:
    """Decides which running-progress lines of a piece of work are printed: its first one, then at most one per
    `interval_s` seconds (monotonic clock; `clock` is injectable for tests). Thread-safe.

    `due(key)` answers True and starts a new interval when the key's last printed line is at least
    `interval_s` old, or for the key's first line unless `first=False` (then the first line only starts the
    clock: a piece whose start is already said elsewhere shows progress only once it has run a minute);
    `forget(key)` ends the piece (its next line is a first one again).
    """

    def __init__(self, interval_s: float = PLAIN_PROGRESS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def due(self, key: Hashable, *, first: bool = True) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is None:
                self._last[key] = now
                return first
            if now - last < self.interval_s:
                return False
            self._last[key] = now
            return True

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._last.pop(key, None)
