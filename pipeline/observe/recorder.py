"""What a run leaves in its directory for the reports: `events.jsonl` (the timeline) and `logs/` (every line).

events.jsonl, one JSON object per line, `t` in epoch seconds (float):
    {"t", "kind": "stage_started", "stage"}
    {"t", "kind": "stage_finished", "stage", "status", "detail"}
    {"t", "kind": "service_started", "stage", "service"}
    {"t", "kind": "service_finished", "stage", "service", "state", "text"}     state: done | cached | failed
logs/<stage>/<service>.log: every step line of that service in that stage (tool output included);
logs/<stage>.log: the stage's own lines (info, warnings, details); run.log: every line of the run.
All text is redacted before it is written.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from pipeline.core.redact import redact

EVENTS_FILE = "events.jsonl"
TERMINAL = ("done", "cached", "failed", "interrupted")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name) or "_"


def tail(path: Path, n: int = 20) -> list[str]:
    """The last n lines of a text file ([] when it does not exist)."""
    try:
        with path.open(errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=n)]
    except OSError:
        return []


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's events, in order ([] when the run recorded none)."""
    path = run_dir / EVENTS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue   # a line cut short by a crash
    return out


class RunRecorder:
    """Writes one run's events and logs (thread-safe). `close()` releases the files."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._events = (run_dir / EVENTS_FILE).open("a")
        self._run_log = (run_dir / "run.log").open("a")
        self._files: dict[Path, TextIO] = {}

    def event(self, kind: str, **fields: Any) -> None:
        rec = {"t": round(time.time(), 3), "kind": kind, **fields}
        line = redact(json.dumps(rec))
        with self._lock:
            self._events.write(line + "\n")
            self._events.flush()

    def service_log(self, stage: str, service: str) -> Path:
        return self.logs / _safe(stage) / f"{_safe(service)}.log"

    def stage_log(self, stage: str) -> Path:
        return self.logs / f"{_safe(stage)}.log"

    def write(self, path: Path | None, text: str) -> None:
        """Append a line to `path` (None: run.log only) and to run.log."""
        line = redact(text)
        with self._lock:
            if path is not None:
                fh = self._files.get(path)
                if fh is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fh = self._files[path] = path.open("a")
                fh.write(line + "\n")
                fh.flush()
            self._run_log.write(line + "\n")
            self._run_log.flush()

    def close(self) -> None:
        with self._lock:
            for fh in [*self._files.values(), self._events, self._run_log]:
                fh.close()
            self._files.clear()
