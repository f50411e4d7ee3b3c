"""The options of one run, typed (Skaffold's SkaffoldOptions): built once from the CLI flags, read by the stages.

A misspelt option is a TypeError where it is built (and a mypy error before that); a bad value is a UsageError
naming the flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UsageError


@dataclass(frozen=True)
class RunOptions:
    """Flags of `invoke build|smoke|deploy|release…`; every field's default is the flag's.

    no_cache, workers (0 = auto), fail_fast: the build; dry_run: deploy renders and validates only;
    keep_on_failure, compose_overrides (absolute paths), smoke_wait_s (seconds; None = the smoke stage's
    default): the smoke test; deploy_timeout_s (seconds; None = the deploy's default): Helm's wait.
    """

    no_cache: bool = False
    workers: int = 0
    fail_fast: bool = False
    dry_run: bool = False
    keep_on_failure: bool = False
    compose_overrides: tuple[Path, ...] = ()
    smoke_wait_s: float | None = None
    deploy_timeout_s: int | None = None

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise UsageError(f"--workers {self.workers} is negative", "give 0 (auto) or a positive number")
        if self.smoke_wait_s is not None and self.smoke_wait_s <= 0:
            raise UsageError(f"--wait-timeout {self.smoke_wait_s:g} is not positive", "give seconds, e.g. 120")
        if self.deploy_timeout_s is not None and self.deploy_timeout_s <= 0:
            raise UsageError(f"--deploy-timeout {self.deploy_timeout_s} is not positive", "give seconds, e.g. 300")
