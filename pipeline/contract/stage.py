"""The stage shape every task and the release share (GoReleaser's pipes, pdm's BaseCommand).

    name: str                          the registry's name (pipeline/core/stage_registry.py)
    check_only: bool                   it only verifies the world and changes nothing
    skip(ctx)      -> reason | None    applies to this run? (the reason is printed and recorded)
    preflight(ctx) -> None             cheap checks before anything runs (raise a PipelineError)
    provision(ctx) -> None             long preparation of the world the stage needs that does not depend on
                                       the stages before it (the local cluster's build and start): the runner
                                       runs it in the background while those stages run, and waits for it
                                       before this stage's holds() and run()
    holds(ctx)     -> reason | None    does the recorded result still hold in the world? None = yes
    run(ctx)       -> StageSummary     the work; per-service records through the manifest's typed accessors

A stage subclasses BaseStage and overrides what it needs: by default it always applies, checks nothing
before the run, and never resumes (holds() cannot check, so the stage runs again). Its ordering against the
other stages (`requires`, `after`) is declared on its registry line, which the config reads without
importing the stage. The runner (pipeline.release.runner) alone records `stages.<name>` from the summary.
A check_only stage never resumes (its holds() always gives a reason) and a release where it is the only
stage that ran still "had nothing to redo".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pipeline.contract.context import RunContext

# BaseStage.holds(): what the runner prints when a recorded stage cannot be checked, before running it again.
CANNOT_CHECK = "its result cannot be checked against the world; running it again"


@dataclass
class StageSummary:
    """What a stage returns: a one-line detail for the summary table and extra fields for `stages.<name>`."""

    detail: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    """What the runner calls (BaseStage is the usual implementation; the runner's tests use fakes)."""

    name: str
    check_only: bool

    def skip(self, ctx: RunContext) -> str | None: ...

    def preflight(self, ctx: RunContext) -> None: ...

    def provision(self, ctx: RunContext) -> None: ...

    def holds(self, ctx: RunContext) -> str | None: ...

    def run(self, ctx: RunContext) -> StageSummary: ...


class BaseStage:
    """Defaults of the stage shape: applies always, no pre-flight, never resumed unchecked."""

    name: str = ""
    check_only: bool = False

    def skip(self, ctx: RunContext) -> str | None:
        """A reason this stage does not apply to this run (printed, recorded as skipped), else None."""
        return None

    def preflight(self, ctx: RunContext) -> None:
        """Cheap checks before any stage runs; raise a PipelineError."""

    def provision(self, ctx: RunContext) -> None:
        """Long preparation this stage needs and the earlier stages do not (default: none). Runs in the
        runner's provisioning thread, overlapping the earlier stages; raise a PipelineError."""

    def holds(self, ctx: RunContext) -> str | None:
        """None when the recorded result still holds in the world; else why it runs again.
        The default cannot check, so a recorded stage is never resumed unchecked."""
        return CANNOT_CHECK

    def run(self, ctx: RunContext) -> StageSummary:
        raise NotImplementedError(f"stage {self.name or type(self).__name__} has no run()")
