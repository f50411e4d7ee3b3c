"""Builder output → steps: BuildKit's `--progress=plain` stream and the legacy builder's `Step N/M` lines.

BuildKit's plain progress (the format the docker CLI 20.10 and buildx print) is one line per event, each
prefixed by its vertex number: `#8 [build 6/6] RUN go build …` (a step starts; its name), `#8 0.512 …`
(the step's output, with the seconds since it started), `#8 CACHED`, `#8 DONE 3.2s`, `#8 ERROR: …`,
plus `#8 sha256:…`/`#8 transferring …` progress lines. The legacy builder prints `Step 3/12 : COPY …`,
` ---> Using cache`, ` ---> Running in …` and the step's output.

`BuildProgress.feed(line)` turns either into `Step` events (one per state change of a named step) and keeps
each step's last output lines, so a failure can show the failing step's tail.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

_VERTEX = re.compile(r"^#(\d+) (.*)$")
_TIMED = re.compile(r"^\d+\.\d+ (.*)$")
_DONE = re.compile(r"^DONE (\d+(?:\.\d+)?)s$")
_LEGACY_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
TAIL_LINES = 20


@dataclass(frozen=True)
class Step:
    """A state change of one build step: `state` is running | cached | done | failed; seconds when known."""

    name: str
    state: str
    seconds: float | None = None


@dataclass
class _Vertex:
    name: str
    state: str = "running"
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


class BuildProgress:
    """Parses one build's output, line by line (either format); not thread-safe: one per build."""

    def __init__(self) -> None:
        self.vertices: dict[str, _Vertex] = {}
        self.order: list[str] = []
        self.failed: str | None = None
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)   # the last lines of the whole build
        self._legacy: str | None = None

    def feed(self, line: str) -> list[Step]:
        """One output line → the step events it carries (often none)."""
        self.tail.append(line)
        m = _VERTEX.match(line)
        if m:
            return self._buildkit(m.group(1), m.group(2))
        return self._legacy_line(line)

    def _buildkit(self, vid: str, rest: str) -> list[Step]:
        v = self.vertices.get(vid)
        if v is None:
            self.vertices[vid] = v = _Vertex(rest)
            self.order.append(vid)
            return [Step(rest, "running")] if _is_step(rest) else []
        if rest == "CACHED":
            v.state = "cached"
            return [Step(v.name, "cached")] if _is_step(v.name) else []
        done = _DONE.match(rest)
        if done:
            v.state = "done"
            return [Step(v.name, "done", float(done.group(1)))] if _is_step(v.name) else []
        if rest.startswith("ERROR"):
            v.state = "failed"
            self.failed = vid
            v.tail.append(rest)
            return [Step(v.name, "failed")]
        timed = _TIMED.match(rest)
        if timed:
            v.tail.append(timed.group(1))
        return []

    def _legacy_line(self, line: str) -> list[Step]:
        m = _LEGACY_STEP.match(line)
        if m:
            events = [Step(self._legacy, "done")] if self._legacy else []
            self._legacy = f"[{m.group(1)}/{m.group(2)}] {m.group(3)}"
            self.vertices[self._legacy] = _Vertex(self._legacy)
            self.order.append(self._legacy)
            return [*events, Step(self._legacy, "running")]
        if self._legacy is None:
            return []
        v = self.vertices[self._legacy]
        if line.strip() == "---> Using cache":
            v.state = "cached"
            return [Step(self._legacy, "cached")]
        if not line.startswith(" ---> "):
            v.tail.append(line)
        return []

    def cached_steps(self) -> list[str]:
        """Names of the steps the builder took from its cache."""
        return [self.vertices[v].name for v in self.order if self.vertices[v].state == "cached"]

    def failing_step(self) -> str | None:
        """The name of the step that failed (BuildKit: its ERROR vertex; legacy: the last step begun), or None."""
        if self.failed is not None:
            return self.vertices[self.failed].name
        if self._legacy is not None and self.vertices[self._legacy].tail:
            return self._legacy
        return None

    def failure_tail(self) -> list[str]:
        """The failing step's last output lines (BuildKit), else the build's last lines."""
        if self.failed is not None:
            v = self.vertices[self.failed]
            return [f"{v.name}:", *v.tail]
        if self._legacy is not None and self.vertices[self._legacy].tail:
            return [f"{self._legacy}:", *self.vertices[self._legacy].tail]
        return list(self.tail)


def _is_step(name: str) -> bool:
    """A Dockerfile step (`[build 3/6] COPY …`, `[stage-1 2/4] …`), not BuildKit's internal loading vertices."""
    return name.startswith("[") and not name.startswith("[internal]")
