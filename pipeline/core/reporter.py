"""The one reporter of a run: every line a stage says goes through it, redacted.

Stages never print: they call `ctx.reporter`. The reporter decides how a line reaches the user (a plain
line per event when there is no terminal, as in CI; a live view on a terminal) and keeps per-service
progress for the summary. `PlainReporter` is the line-per-event implementation; the live view
implements the same protocol.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from pipeline.core.console import console, table
from pipeline.core.progress import EventThrottle
from pipeline.core.redact import redact


class Reporter(Protocol):
    """What a stage may say. Every method is thread-safe (builds and pushes run in worker threads)."""

    def info(self, msg: str) -> None:
        """A fact worth a line (a decision, a result)."""

    def warn(self, msg: str) -> None:
        """Something the user should know that does not fail the run."""

    def detail(self, msg: str) -> None:
        """Tool output and other noise: shown only in verbose mode (always in the log files)."""

    def stage_started(self, stage: str) -> None:
        """A stage begins (the runner calls it)."""

    def stage_finished(self, stage: str, status: str, detail: str = "") -> None:
        """A stage ended with a status (ok, failed, skipped, resumed, redone) and a one-line detail."""

    def step(self, stage: str, service: str, text: str, state: str = "running") -> None:
        """Per-service progress inside a stage: `state` is running | done | cached | failed."""

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A small table (a plan, a summary); cells are plain text."""

    def excerpt(self, title: str, lines: Sequence[str]) -> None:
        """A block always shown as is, even in a live view (the last lines of a failing log, with its path)."""

    def run_opened(self, run_dir: Path, run_id: str, env: str) -> None:
        """The runner opened a run: its directory exists (logs, events, trace go there)."""

    def run_closed(self, status: str) -> None:
        """The run ended (ok, failed, interrupted): flush and release what run_opened took."""


class PlainReporter:
    """One line per event, no escape codes: for CI logs, pipes and tests.

    `sink` receives each redacted line instead of the console (a test's list.append, a log file's write);
    `to_stderr` sends the lines to stderr (commands whose stdout is data, e.g. `--json`).
    """

    def __init__(self, *, verbose: bool = False, to_stderr: bool = False,
                 sink: Callable[[str], None] | None = None, throttle: EventThrottle | None = None) -> None:
        self.verbose = verbose
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}
        self._stderr = to_stderr
        self._sink = sink
        self._throttle = throttle or EventThrottle()

    def _line(self, text: str) -> None:
        with self._lock:
            if self._sink is not None:
                self._sink(redact(text))
            elif self._stderr:
                print(redact(text), file=sys.stderr, flush=True)
            else:
                console.print(text, highlight=False, markup=False, soft_wrap=True)  # one event, one line

    def info(self, msg: str) -> None:
        self._line(msg)

    def warn(self, msg: str) -> None:
        self._line(f"warning: {msg}")

    def detail(self, msg: str) -> None:
        if self.verbose:
            self._line(msg)

    def stage_started(self, stage: str) -> None:
        self._started[stage] = time.monotonic()
        self._line(f"── {stage}")

    def stage_finished(self, stage: str, status: str, detail: str = "") -> None:
        started = self._started.pop(stage, None)   # a resumed or skipped stage never started
        took = f" ({time.monotonic() - started:.1f}s)" if started is not None else ""
        self._line(f"── {stage}: {status}{took}{f' — {detail}' if detail else ''}")

    def step(self, stage: str, service: str, text: str, state: str = "running") -> None:
        """Verbose: every step. Else every end (done, failed…) and running steps at most once a minute per piece:
        long work outside a started stage (bases, the cluster: `cluster: kubernetes build: …`) from its first step
        on, a stage's service (a large push: `  veza-docs: 3/7 layers, 41.2/118.0 MB`) once it has run a minute."""
        key = (stage, service)
        in_stage = stage in self._started
        if state == "running":
            if not self.verbose and not self._throttle.due(key, first=not in_stage):
                return
        else:
            self._throttle.forget(key)
        who = f"  {service}" if in_stage else f"{stage}: {service}"
        self._line(f"{who}: {text}" if state in ("running", "done") else f"{who}: {state} — {text}")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if self._sink is not None or self._stderr:
            self._line(title)
            for row in rows:
                self._line("  " + " | ".join(row))
            return
        tbl = table(title, *columns)
        for row in rows:
            tbl.add_row(*(str(c) for c in row))
        with self._lock:
            console.print(tbl)

    def excerpt(self, title: str, lines: Sequence[str]) -> None:
        self._line(title)
        for line in lines:
            self._line(f"  │ {line}")

    def run_opened(self, run_dir: Path, run_id: str, env: str) -> None:
        pass

    def run_closed(self, status: str) -> None:
        pass
