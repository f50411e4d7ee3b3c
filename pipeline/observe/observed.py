"""A Reporter that also records: every event the display gets, it writes to the run directory and the trace.

`ObservedReporter(display)` forwards every call to `display` (the live view or the plain lines) and, once the
runner has opened a run (`run_opened`), writes events.jsonl and the logs (pipeline.observe.recorder) and the
OpenTelemetry spans (pipeline.observe.tracing). A failing service or stage gets the last 20 lines of its log
shown inline, with the log's path, unless the stage already showed that failure's excerpt (the build shows the
failing Dockerfile step's output): one excerpt per failure. An interrupted one (Ctrl-C) gets none: the user
stopped it, the runner's one line says so.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.reporter import Reporter
from pipeline.observe import tracing
from pipeline.observe.recorder import TERMINAL, RunRecorder, tail

FAILED = ("failed", "blocked", "interrupted")
TAILED = ("failed", "blocked")   # an interruption is no failure to explain: no log tail
TAIL_LINES = 20


class ObservedReporter:
    """The display's Reporter protocol, plus the run's records. Thread-safe."""

    def __init__(self, display: Reporter, *, trace: bool = True) -> None:
        self.display = display
        self.verbose = bool(getattr(display, "verbose", False))
        self._trace_enabled = trace
        self._lock = threading.Lock()
        self.recorder: RunRecorder | None = None
        self.trace: tracing.RunTrace | None = None
        self._stage: str | None = None
        self._open: set[tuple[str, str]] = set()
        self._tails_shown: set[str] = set()
        self._piece_of_thread: dict[int, tuple[str, str]] = {}   # thread → the (stage, service) it steps
        self._excerpted: set[tuple[str, str]] = set()             # pieces whose stage showed an excerpt

    # -- run lifetime (the runner's open_run) ------------------------------------------------------------
    def run_opened(self, run_dir: Path, run_id: str, env: str) -> None:
        self.recorder = RunRecorder(run_dir)
        if self._trace_enabled:
            self.trace = tracing.RunTrace(run_dir, run_id, env)
            tracing.activate(self.trace)
        self.display.run_opened(run_dir, run_id, env)

    def run_closed(self, status: str) -> None:
        self.display.run_closed(status)
        if self.trace is not None:
            tracing.activate(None)
            self.trace.close(status)
            error = self.trace.export_error()
            if error:
                self.display.warn(error)
            self.trace = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    # -- lines ---------------------------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        rec = self.recorder
        if rec is not None:
            stage = self._stage
            rec.write(rec.stage_log(stage) if stage else None, text)

    def info(self, msg: str) -> None:
        self._log(msg)
        self.display.info(msg)

    def warn(self, msg: str) -> None:
        self._log(f"warning: {msg}")
        self.display.warn(msg)

    def detail(self, msg: str) -> None:
        self._log(msg)
        self.display.detail(msg)

    def excerpt(self, title: str, lines: Sequence[str]) -> None:
        """Shown as is. Said by a thread that steps a piece of work (a build worker), it is that piece's excerpt:
        when the piece then fails, its log's tail is not shown again."""
        with self._lock:
            piece = self._piece_of_thread.get(threading.get_ident())
            if piece is not None:
                self._excerpted.add(piece)
        self._log("\n".join([title, *lines]))
        self.display.excerpt(title, lines)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self._log(title + "".join("\n  " + " | ".join(r) for r in rows))
        self.display.table(title, columns, rows)

    # -- stages and steps ---------------------------------------------------------------------------------
    def stage_started(self, stage: str) -> None:
        with self._lock:
            self._stage = stage
        if self.recorder is not None:
            self.recorder.event("stage_started", stage=stage)
        if self.trace is not None:
            self.trace.stage_started(stage)
        self.display.stage_started(stage)

    def stage_finished(self, stage: str, status: str, detail: str = "") -> None:
        rec = self.recorder
        with self._lock:
            still_open = [k for k in self._open if k[0] == stage]
            self._open.difference_update(still_open)
            if self._stage == stage:
                self._stage = None
        if rec is not None:
            for _, service in still_open:
                rec.event("service_finished", stage=stage, service=service, state="failed" if status in FAILED
                          else "done", text="")
            rec.event("stage_finished", stage=stage, status=str(status), detail=detail)
        if self.trace is not None:
            self.trace.stage_finished(stage, str(status), detail)
        self.display.stage_finished(stage, status, detail)
        if rec is not None and status in TAILED and stage not in self._tails_shown:
            self._show_tail(rec.stage_log(stage))
        self._tails_shown.discard(stage)

    def step(self, stage: str, service: str, text: str, state: str = "running") -> None:
        rec = self.recorder
        key = (stage, service)
        with self._lock:
            first = key not in self._open and state == "running"
            if first:
                self._open.add(key)
            finished = state in TERMINAL
            was_open = key in self._open
            if finished:
                self._open.discard(key)
                self._piece_of_thread.pop(threading.get_ident(), None)
            else:
                self._piece_of_thread[threading.get_ident()] = key
            excerpted = finished and key in self._excerpted
            if finished:
                self._excerpted.discard(key)
        if rec is not None:
            rec.write(rec.service_log(stage, service), text if state == "running" else f"[{state}] {text}")
            if first or (finished and not was_open):
                rec.event("service_started", stage=stage, service=service)
            if finished:
                rec.event("service_finished", stage=stage, service=service, state=state, text=text[:300])
        if self.trace is not None:
            if first or (finished and not was_open):
                self.trace.service_started(stage, service)
            if finished:
                self.trace.service_finished(stage, service, state)
        self.display.step(stage, service, text, state)
        if rec is not None and state == "failed":
            self._tails_shown.add(stage)
            if not excerpted:
                self._show_tail(rec.service_log(stage, service))

    def _show_tail(self, path: Path) -> None:
        lines = tail(path, TAIL_LINES)
        if not lines:
            return
        self.display.excerpt(f"last {len(lines)} lines of {path}:", lines)
