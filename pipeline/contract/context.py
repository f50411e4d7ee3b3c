"""What a stage runs in: the RunContext of one command, and the run's typed state (outcomes, per-run memos)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.contract.options import RunOptions
from pipeline.core.config import Config, Environment
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import StageStatus
from pipeline.tools.registry_clients import RegistryClients
from pipeline.versioning.releaseinfo import ReleaseInfo


@dataclass
class Outcome:
    """What happened to one stage in this run (the summary table, the report, `stages.<name>`)."""

    name: str
    status: StageStatus
    duration_s: float = 0.0
    detail: str = ""
    exit_code: int = 0
    started: float = 0.0          # wall clock (epoch seconds), for the report's timeline
    fields: dict[str, Any] = field(default_factory=dict)
    check_only: bool = False      # a check stage (Stage.check_only) that ran: it verified, it redid nothing


@dataclass
class Phase:
    """Work of a run that is not a stage: the pre-flight, a stage's provisioning (the report's timeline)."""

    name: str
    started: float                # wall clock (epoch seconds)
    duration_s: float
    status: str                   # "ok" | "failed" | "interrupted"
    detail: str = ""


@dataclass
class RunState:
    """What one run learns as it goes, shared by its stages and its report.

    outcomes: every stage's Outcome so far, in order (the runner appends); phases: the pre-flight's and each
    provisioning's timing (pipeline.release.runner); cluster_checked: the cluster was
    found up once this run (deploy and verify ask once); published: service → the published-image re-check
    ({"image", "signature", "provenance", "sbom", "vex"}; pipeline/stages/published.py), None until it ran.
    """

    outcomes: list[Outcome] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    cluster_checked: bool = False
    published: dict[str, dict[str, str]] | None = None


@dataclass
class RunContext:
    """Everything a stage may use, built once per command (`invoke scan` and `invoke release` alike).

    cfg/env: the loaded config and the target environment (objects, never names to look up again);
    info: version facts and tags; manifest: this environment's Release manifest; run_dir: this run's
    logs and reports; services: the selection (empty = all); options: the command's flags; state: what the
    run learnt so far; cancel: set on Ctrl-C/SIGTERM; registries: one client per registry address, one timeout
    policy (pipeline/tools/registry_clients.py).
    """

    cfg: Config
    env: Environment
    info: ReleaseInfo
    manifest: Manifest
    run_id: str
    run_dir: Path
    reporter: Reporter
    services: list[str] = field(default_factory=list)
    options: RunOptions = field(default_factory=RunOptions)
    state: RunState = field(default_factory=RunState)
    cancel: threading.Event = field(default_factory=threading.Event)
    registries: RegistryClients = field(init=False)

    def __post_init__(self) -> None:
        self.registries = RegistryClients(self.cfg, self.env)

    def selected(self) -> list[str]:
        """The selected service names, in config order (all when none was named)."""
        return [s.name for s in self.cfg.select(self.services)]
