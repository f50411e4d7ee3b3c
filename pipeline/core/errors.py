"""One exception hierarchy: each error carries its exit code and a hint for the user.

A user error prints one line (what, where, how to fix) and never a traceback;
tasks.py maps these exceptions to exit codes.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Fields a failing stage wants in its `stages.<name>` record (e.g. the smoke logs path).
        self.record: dict[str, object] = {}

    def one_line(self) -> str:
        return f"{self.message} (fix: {self.hint})" if self.hint else self.message


class UsageError(PipelineError):
    """Bad command-line usage or a bad pipeline.toml (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """pipeline.toml (or another config file) is malformed (exit 2)."""


class GitStateError(UsageError):
    """The repository is not in a state the requested action accepts (exit 2)."""


class PolicyBlocked(PipelineError):
    """A policy gate (scan, lint, promotion) blocked the release (exit 3)."""

    exit_code = 3


class SmokeFailed(PipelineError):
    """The compose smoke test failed (exit 4)."""

    exit_code = 4


class DeployFailed(PipelineError):
    """The deploy failed and was rolled back (exit 5)."""

    exit_code = 5


class ToolMissing(PipelineError):
    """A required tool or the Docker engine is missing or not answering (exit 6)."""

    exit_code = 6


class DriftFound(PipelineError):
    """`invoke status`: the cluster does not run exactly what the environment's manifest records (exit 7)."""

    exit_code = 7


class StageFailed(PipelineError):
    """A stage failed for a reason that is not a gate (build error, push error): exit 1."""

    exit_code = 1


class RegistryAuthError(PipelineError):
    """The registry refused our credentials (exit 2: fix the credentials)."""

    exit_code = 2


class RegistryTrustError(RegistryAuthError):
    """The registry's certificate cannot be verified, or the CA file that should verify it is unusable (exit 2):
    retrying does not help, the configuration or the certificate must change."""


class Interrupted(PipelineError):
    """The user pressed Ctrl-C; cleanup ran (exit 130)."""

    exit_code = 130
