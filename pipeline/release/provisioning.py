"""Stages' provisioning in the background: the long preparation a later stage needs (the local cluster's build
and start, minutes from cold) overlaps the stages before it (bases, builds, scan, push, sign), so a cold
release is bounded by its longest path, not by the sum.

One thread runs every applicable stage's provision() in stage order (deploy's, then verify's, which then finds
the cluster already up): one at a time, so two CPU-heavy provisions never compete with the builds at once.
The runner waits for a stage's provisioning before that stage's holds() and run(), and looks for a failed
provisioning before every stage, so a cluster that cannot start stops the run at the next stage boundary
instead of after the whole build. The thread is always joined before the run ends (a half-started cluster
would be left behind otherwise); on Ctrl-C its child processes get the same SIGINT and end with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from pipeline.contract.context import Phase, RunContext
from pipeline.contract.stage import Stage


class Provisioning:
    """The provision() work of `stages` (the ones the runner decided to run: it alone calls skip()), started by
    start(), each stage's completion awaited by wait()."""

    def __init__(self, ctx: RunContext, stages: Sequence[Stage]) -> None:
        self.ctx = ctx
        self.stages = list(stages)
        self.done = {s.name: threading.Event() for s in self.stages}
        self.errors: dict[str, BaseException] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="provisioning", daemon=True)

    def start(self) -> Provisioning:
        self._thread.start()
        return self

    def _work(self) -> None:
        try:
            for stage in self.stages:
                if self.errors or self._stop.is_set() or self.ctx.cancel.is_set():
                    break
                t0, wall, status = time.monotonic(), time.time(), "ok"
                try:
                    stage.provision(self.ctx)
                except BaseException as exc:  # handed to the main thread, which raises it for this stage
                    self.errors[stage.name] = exc
                    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                finally:
                    elapsed = time.monotonic() - t0
                    if elapsed >= 0.05 or status != "ok":   # a no-op provision is no news on the timeline
                        self.ctx.state.phases.append(Phase(f"provision {stage.name}", wall, elapsed, status))
                    self.done[stage.name].set()
        finally:
            for event in self.done.values():
                event.set()

    def wait(self, name: str) -> None:
        """Block until stage `name`'s provisioning ended (at once when it has none or it is done)."""
        event = self.done.get(name)
        if event is not None:
            while not event.wait(0.2):   # a timeout keeps the main thread answering Ctrl-C
                pass

    def raise_failed(self, name: str) -> None:
        """Raise the error stage `name`'s provisioning ended with, if it failed."""
        if name in self.errors:
            raise self.errors[name]

    def failed_stage(self) -> str | None:
        """The stage whose provisioning failed, if one did."""
        return next(iter(self.errors), None)

    def close(self) -> None:
        """Stop starting new provisions and wait for the one under way (it owns processes and locks)."""
        self._stop.set()
        if self._thread.is_alive():
            self.ctx.reporter.info("waiting for the provisioning under way to finish (stopping it midway would "
                                   "leave its work half done)")
        while self._thread.is_alive():
            self._thread.join(0.2)
