"""The stage shape every task and the release share, and the context they run in.

A stage is a small object (GoReleaser's pipes, Skaffold's roles):

    name: str
    skip(ctx)      -> reason | None   applies to this run? (the reason is printed and recorded)
    preflight(ctx) -> None            cheap checks before anything runs (raise a PipelineError)
    holds(ctx)     -> reason | None   does the recorded result still hold in the world? None = yes
    run(ctx)       -> StageSummary    the work; per-service records through the manifest's typed accessors

The runner (pipeline.release.runner) alone records `stages.<name>` from the returned summary.
A stage may set `check_only = True`: it only verifies the world and changes nothing, so it never resumes (its
holds() always gives a reason) and a release where it is the only stage that ran still "had nothing to redo".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.core.config import Config, Environment
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import Reporter
from pipeline.tools.registry_clients import RegistryClients
from pipeline.versioning.releaseinfo import ReleaseInfo


@dataclass
class StageSummary:
    """What a stage returns: a one-line detail for the summary table and extra fields for `stages.<name>`."""

    detail: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything a stage may use, built once per command (`invoke scan` and `invoke release` alike).

    cfg/env: the loaded config and the target environment (objects, never names to look up again);
    info: version facts and tags; manifest: this environment's Release manifest; run_dir: this run's
    logs and reports; services: the selection (empty = all); cancel: set on Ctrl-C/SIGTERM.
    """

    cfg: Config
    env: Environment
    info: ReleaseInfo
    manifest: Manifest
    run_id: str
    run_dir: Path
    reporter: Reporter
    services: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)   # per-command flags (no_cache, workers, dry_run…)
    cancel: threading.Event = field(default_factory=threading.Event)
    registries: RegistryClients = field(init=False)   # one client per registry address, one timeout policy

    def __post_init__(self) -> None:
        self.registries = RegistryClients(self.cfg)

    def selected(self) -> list[str]:
        """The selected service names, in config order (all when none was named)."""
        return [s.name for s in self.cfg.select(self.services)]


class Stage(Protocol):
    name: str

    def skip(self, ctx: RunContext) -> str | None: ...

    def preflight(self, ctx: RunContext) -> None: ...

    def holds(self, ctx: RunContext) -> str | None: ...

    def run(self, ctx: RunContext) -> StageSummary: ...
