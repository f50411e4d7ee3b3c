"""The facts every bench prints beside its figures: date (UTC), machine, load average at start and end, commit.

A figure in README.md or bench/README.md names these (bench/README.md, "Rules"), so a reader can tell which
code it describes and how busy the shared machine was. Usage in a bench script:

    facts = RunFacts.start()          # before the first measurement
    ...
    print(facts.finish())             # after the last one: one Markdown-ready paragraph

or, around a whole script: `raise SystemExit(with_facts(main))`.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loadavg() -> str:
    """The 1/5/15-minute load averages, e.g. '2.31/1.80/1.02'."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def commit(tree: Path = ROOT) -> str:
    """HEAD's short SHA of `tree`, with '+dirty' when tracked files differ from it ('unknown' outside git)."""
    try:
        sha = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "diff", "--quiet", "HEAD", "--"], timeout=10,
                               check=False).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def machine() -> str:
    """Cores, OS and Python, e.g. '2 cores, Linux-6.1…-x86_64-with-glibc2.36, Python 3.11.7'."""
    return f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}"


@dataclass
class RunFacts:
    """When a bench ran, on which commit, and the machine's load when it started (and, via finish(), ended)."""

    started: datetime
    load_start: str
    commit: str
    t0: float

    @classmethod
    def start(cls) -> RunFacts:
        """Record the start: call before the first measurement (and print header() if the run is long)."""
        return cls(datetime.now(UTC), loadavg(), commit(), time.monotonic())

    def header(self) -> str:
        """One line to print at the start, so a run stopped half-way still says what it measured."""
        return (f"bench started {self.started:%Y-%m-%d %H:%M:%S} UTC on commit {self.commit}; "
                f"{machine()}; load {self.load_start}")

    def finish(self) -> str:
        """The facts line to print after the figures: date, start–end time, load at start and end, commit."""
        end = datetime.now(UTC)
        return (f"measured {self.started:%Y-%m-%d} {self.started:%H:%M}–{end:%H:%M} UTC "
                f"({time.monotonic() - self.t0:.0f} s) on commit {self.commit}; {machine()}; "
                f"load average (1/5/15 min) {self.load_start} at the start, {loadavg()} at the end")


def with_facts(main: Callable[[], int | str | None]) -> int | str | None:
    """Run a bench's main() between its facts: the header first, the facts line last (also when main fails).
    Returns main's result, for SystemExit (None or 0: success; a string is printed and exits 1)."""
    facts = RunFacts.start()
    print(facts.header(), flush=True)
    try:
        return main()
    finally:
        print(facts.finish(), flush=True)
