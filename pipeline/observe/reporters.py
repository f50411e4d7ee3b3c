"""The reporter of one command: the live view on a terminal, else plain lines; both recorded (observed.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline.core.console import console
from pipeline.core.reporter import PlainReporter, Reporter


def wants_live_view(is_terminal: bool, environ: Mapping[str, str] | None = None) -> bool:
    """The live view only on a terminal, and never in CI (CI set to anything but false/0) or with TERM=dumb."""
    e = os.environ if environ is None else environ
    ci = e.get("CI", "").strip().lower()
    return is_terminal and ci in ("", "false", "0") and e.get("TERM", "") != "dumb"


def make_reporter(*, verbose: bool = False) -> Reporter:
    """The reporter for a command: the live view on a terminal, else one plain line per event; both record
    the run's events, logs and trace into its run directory (pipeline.observe)."""
    from pipeline.observe.observed import ObservedReporter

    display: Reporter
    if wants_live_view(console.is_terminal):
        from pipeline.observe.live import LiveReporter

        display = LiveReporter(verbose=verbose)
    else:
        display = PlainReporter(verbose=verbose)
    return ObservedReporter(display)
