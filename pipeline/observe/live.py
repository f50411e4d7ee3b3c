"""The live view for a terminal (rich Live): one line per service per running stage, stage headers, quiet output.

While a stage runs, a live region shows its header (name, elapsed) and one line per service: state, elapsed,
the current step (the last line its tool printed). When the stage ends the region is replaced by one line
("✓ build ok (34.1s) — 2 built, 2 reused"). Stages that resume or are skipped in a row share one line, so a
no-op release stays a handful of lines. Tool output is not shown (it is in the run's log files) unless
verbose, where it streams above the live region. What a running stage says (its facts and tables) shows as
the latest note under its header and stays in the run's logs (run.log, logs/<stage>.log), so a release fits
a screen; warnings, and everything said outside a stage (the summary, the report's path), print above the
region. With verbose, every line prints.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from pipeline.core.console import console as default_console
from pipeline.core.console import table as make_table
from pipeline.core.redact import redact

ECHO_ROOM = 2   # columns every line of the live region leaves free (see LiveReporter._render)
_NOISE = re.compile(r"\s*(--->|Removing intermediate container|Successfully tagged|\s*$)")
GLYPH = {"ok": "✓", "done": "✓", "cached": "≡", "resumed": "↩", "skipped": "·", "failed": "✗", "blocked": "✗",
         "interrupted": "■"}
STYLE = {"ok": "green", "done": "green", "cached": "cyan", "resumed": "cyan", "skipped": "dim", "failed": "red",
         "blocked": "red", "interrupted": "yellow"}


@dataclass
class _Row:
    state: str = "running"
    text: str = ""
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None


@dataclass
class _Group:
    started: float = field(default_factory=time.monotonic)
    explicit: bool = True            # opened by stage_started (else by a step: bases, the cluster build…)
    rows: dict[str, _Row] = field(default_factory=dict)
    note: str = ""                   # the latest fact the stage said (shown under its header)


def _elapsed(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class LiveReporter:
    """The Reporter protocol as a live terminal view. Thread-safe; `out` defaults to the pipeline's console."""

    def __init__(self, *, verbose: bool = False, out: Console | None = None, refresh_per_second: float = 4) -> None:
        self.verbose = verbose
        self.console = out or default_console
        self._lock = threading.RLock()
        self._groups: dict[str, _Group] = {}
        self._quiet_stages: list[tuple[str, str]] = []   # resumed/skipped in a row, printed as one line
        self._live: Live | None = None
        self._fps = refresh_per_second
        self._last_render: RenderableType = Group()

    # -- the live region ------------------------------------------------------------------------------------
    def _ensure_live(self) -> None:
        if self._live is None:
            self._live = Live(get_renderable=self.render, console=self.console, transient=True,
                              refresh_per_second=self._fps)   # a stray print lands above the region
            self._live.start()

    def _stop_live_if_idle(self) -> None:
        if not self._groups and self._live is not None:
            self._live.stop()
            self._live = None

    def render(self) -> RenderableType:
        """The live region: per running stage a header and one line per service, cut to the screen height.

        rich's refresh thread calls this holding the Live's lock, while our methods hold our lock and then need
        the Live's (to print above the region, to stop it): waiting here for our lock would deadlock both
        threads. So the refresh thread never waits: when another thread holds our lock, the region it drew
        last is drawn again (a quarter second old at most)."""
        if not self._lock.acquire(blocking=False):
            return self._last_render
        try:
            self._last_render = self._render()
            return self._last_render
        finally:
            self._lock.release()

    def _render(self) -> RenderableType:
        now = time.monotonic()
        # Every line stays ECHO_ROOM columns short of the screen: the terminal echoes "^C" at the cursor, at the end
        # of the region's last line; a full-width line wraps then, the region is a line taller than rich counts,
        # and its first line stays on the screen after Ctrl-C.
        width = max(10, self.console.width - ECHO_ROOM)
        budget = max(3, (self.console.height or 24) - 2)
        parts: list[RenderableType] = []
        for stage, g in self._groups.items():
            head = Table.grid(padding=(0, 1))
            head.add_row(Spinner("dots", style="cyan"), Text(stage, style="bold"),
                         Text(_elapsed(now - g.started), style="dim"))
            parts.append(head)
            if g.note:
                note = Text("  " + redact(g.note)[: width - 2], style="dim")
                note.no_wrap, note.overflow = True, "ellipsis"
                note.truncate(width)
                parts.append(note)
            rows = list(g.rows.items())
            room = budget - len(parts)
            shown = rows if len(rows) <= room else rows[:max(0, room - 1)]
            for name, r in shown:
                took = (r.ended or now) - r.started
                glyph = GLYPH.get(r.state, "…")
                line = Text("  ")
                line.append(f"{glyph} ", style=STYLE.get(r.state, "yellow"))
                line.append(f"{name:<22.22} {r.state:<8} {_elapsed(took):>7}  ")
                line.append(redact(r.text)[: max(0, width - 45)], style="dim")
                line.no_wrap, line.overflow = True, "ellipsis"
                line.truncate(width)
                parts.append(line)
            if len(shown) < len(rows):
                parts.append(Text(f"  … {len(rows) - len(shown)} more", style="dim"))
        return Group(*parts)

    # -- permanent lines ------------------------------------------------------------------------------------
    def _print(self, text: str | Text) -> None:
        with self._lock:
            self._flush_quiet()
            self._emit(text)

    def _emit(self, text: str | Text) -> None:
        line = Text(redact(text)) if isinstance(text, str) else text
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def _flush_quiet(self) -> None:
        if not self._quiet_stages:
            return
        stages, self._quiet_stages = self._quiet_stages, []
        by_status: dict[str, list[str]] = {}
        for name, status in stages:
            by_status.setdefault(status, []).append(name)
        for status, names in by_status.items():
            line = Text(f"{GLYPH.get(status, '·')} ", style=STYLE.get(status, ""))
            line.append(f"{', '.join(names)}: {status}")
            if status == "resumed":
                line.append(" (recorded earlier; checked: still holds)", style="dim")
            self._emit(line)

    # -- the Reporter protocol ------------------------------------------------------------------------------
    def _running_stage(self) -> _Group | None:
        """The stage whose region takes a stage's facts (the newest one opened by stage_started), if any."""
        explicit = [g for g in self._groups.values() if g.explicit]
        return explicit[-1] if explicit and not self.verbose else None

    def info(self, msg: str) -> None:
        with self._lock:
            g = self._running_stage()
            if g is not None:
                g.note = msg.strip().splitlines()[0] if msg.strip() else g.note
                return
        self._print(msg)

    def warn(self, msg: str) -> None:
        self._print(Text(f"warning: {redact(msg)}", style="yellow"))

    def detail(self, msg: str) -> None:
        if self.verbose:
            self._print(Text(redact(msg), style="dim"))

    def stage_started(self, stage: str) -> None:
        with self._lock:
            self._flush_quiet()
            self._groups[stage] = _Group()
            self._ensure_live()

    def stage_finished(self, stage: str, status: str, detail: str = "") -> None:
        with self._lock:
            g = self._groups.pop(stage, None)
            if g is None and status in ("resumed", "skipped"):
                self._quiet_stages.append((stage, str(status)))
                return
            took = time.monotonic() - g.started if g else 0.0
            line = Text(f"{GLYPH.get(status, '·')} ", style=STYLE.get(status, ""))
            line.append(stage, style="bold")
            line.append(f" {status} ({_elapsed(took)})")
            if detail:
                line.append(f" — {redact(detail)}")
            self._print(line)
            if g is not None and status not in ("ok",):
                for name, r in g.rows.items():
                    if r.state == "failed":
                        self._print(Text(f"  ✗ {name}: {redact(r.text)}", style="red"))
            self._stop_live_if_idle()

    def step(self, stage: str, service: str, text: str, state: str = "running") -> None:
        with self._lock:
            g = self._groups.get(stage)
            if g is None:
                g = self._groups[stage] = _Group(explicit=False)
            r = g.rows.get(service)
            if r is None:
                r = g.rows[service] = _Row()
            # The legacy builder's " ---> 3f2a…" and "Removing intermediate container" lines say less than the
            # "Step 5/9 : RUN …" before them: the current step stays the last meaningful line.
            if state != "running" or not _NOISE.match(text):
                r.text = text
            r.state = state
            if state != "running" and r.ended is None:
                r.ended = time.monotonic()
            if self.verbose and state == "running":
                self._print(Text(f"  {service} │ {redact(text)}", style="dim"))
            elif state == "failed":
                self._print(Text(f"  ✗ {stage} {service}: {redact(text)}", style="red"))
            if not g.explicit and all(x.state != "running" for x in g.rows.values()):
                del self._groups[stage]
                for result in _group_result(stage, g):
                    self._print(result)
                self._stop_live_if_idle()
                return
            self._ensure_live()

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        with self._lock:
            g = self._running_stage()
            if g is not None:
                g.note = f"{title} ({len(rows)} rows: in run.log)"
                return
        tbl = make_table(title, *columns)
        for row in rows:
            tbl.add_row(*(redact(str(c)) for c in row))
        with self._lock:
            self._flush_quiet()
            self.console.print(tbl)

    def excerpt(self, title: str, lines: Sequence[str]) -> None:
        with self._lock:
            self._print(Text(redact(title), style="bold"))
            for line in lines:
                self._print(Text(f"  │ {redact(line)}", style="dim"))

    def run_opened(self, run_dir: Path, run_id: str, env: str) -> None:
        pass

    def run_closed(self, status: str) -> None:
        with self._lock:
            self._flush_quiet()
            self._groups.clear()
            self._stop_live_if_idle()


def _group_result(group: str, g: _Group) -> list[Text]:
    """The permanent lines of finished long work outside a stage (bases, the cluster): its results.

    Up to three pieces: a line per piece, `✓ cluster: kubernetes build — built in 8m31s: … (8m31s)` (a failed
    piece was printed when it failed); more: one line of counts per state, `✓ bases: 5 done, 1 failed (2m10s)`."""
    now = time.monotonic()
    if len(g.rows) <= 3:
        out = []
        for name, r in g.rows.items():
            if r.state != "failed":
                state = r.state if r.state in GLYPH else "done"
                line = Text(f"{GLYPH[state]} ", style=STYLE[state])
                line.append(f"{group}: {name} — {redact(r.text)} ({_elapsed((r.ended or now) - r.started)})")
                out.append(line)
        return out
    counts: dict[str, int] = {}
    for r in g.rows.values():
        counts[r.state] = counts.get(r.state, 0) + 1
    status = next((s for s in ("failed", "interrupted") if s in counts), "done")
    line = Text(f"{GLYPH[status]} ", style=STYLE[status])
    line.append(f"{group}: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({_elapsed(now - g.started)})")
    return [line]
