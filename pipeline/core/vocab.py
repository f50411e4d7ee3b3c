"""The pipeline's vocabulary, defined once: severities, statuses, labels, time (the stage names: stage_registry.py).

Every other module imports these; none re-spells them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum

# Trivy's severities, lowest first (Trivy's own scale: UNKNOWN < LOW < MEDIUM < HIGH < CRITICAL).
SEVERITIES: tuple[str, ...] = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}

# Labels on everything the pipeline creates in the engine, so cleanup and tests find exactly a run's objects.
LABEL_RUN = "veza.pipeline.run"
LABEL_INPUT_DIGEST = "veza.pipeline.input-digest"
LABEL_COMPONENT = "veza.pipeline.component"
# The build's own facts (JSON: commit, run, started, builder, builder_version, engine), written on the image at
# build time: a reuse by input digest (maybe on a fresh runner whose earlier manifest is gone) then attests the
# build that made the image, not the run that reuses it. One label: the legacy builder adds a step per label.
LABEL_BUILD = "veza.pipeline.build"


def carries_build_stamp(labels: Mapping[str, str]) -> bool:
    """Whether an image's labels carry its build's facts (LABEL_BUILD: a JSON object with at least the commit):
    only such an image is reused, so its provenance can describe the build that made it, never a guess."""
    import json

    try:
        stamp = json.loads(labels.get(LABEL_BUILD) or "{}")
    except ValueError:
        return False
    return isinstance(stamp, dict) and bool(stamp.get("commit"))


# The local repository of the build cache tags (`<CACHE_REPO>/<service>:in-<input digest>`): build finds images
# by them, `invoke prune` trims them.
CACHE_REPO = "veza-pipeline-cache"

DEFAULT_ENV = "local"


class StageStatus(StrEnum):
    """A stage's outcome in `stages.<name>` and the run summary."""

    OK = "ok"
    FAILED = "failed"
    BLOCKED = "blocked"          # a gate said no (exit 3/4)
    SKIPPED = "skipped"          # skip() gave a reason
    RESUMED = "resumed"          # recorded ok and holds() confirmed it in the world
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM


class BuildStatus(StrEnum):
    BUILT = "built"
    REUSED = "reused"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PushStatus(StrEnum):
    PUSHED = "pushed"
    SKIPPED = "skipped"          # the registry already served this digest under every tag
    FAILED = "failed"


class ScanStatus(StrEnum):
    PASS = "pass"
    BLOCKED = "blocked"
    ERROR = "error"


class SmokeStatus(StrEnum):
    """A service's smoke record (`services.<name>.smoke`)."""

    PASS = "pass"
    FAIL = "fail"                # a failed check, or the stack failed before any probe reached it
    NOT_RUN = "not_run"          # interrupted before its checks ran


class AttachStatus(StrEnum):
    """An artifact attached to a pushed digest: the SBOM (`sbom`), the provenance (`provenance`)."""

    ATTACHED = "attached"


class SignStatus(StrEnum):
    """A service's signature record (`services.<name>.signature`)."""

    SIGNED = "signed"


class DeployStatus(StrEnum):
    """A service's deploy record (`services.<name>.deploy`)."""

    DEPLOYED = "deployed"
    NOOP = "noop"                # the cluster already ran this release: nothing upgraded
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class VerifyStatus(StrEnum):
    """A service's verify record (`services.<name>.verify`): `invoke verify` (and a release's verify stage)."""

    PASS = "pass"
    FAIL = "fail"                # not the manifest's digest, not rolled out or ready, or a functional check failed


class MigrateStatus(StrEnum):
    """A service's migrate record (`services.<name>.migrate`)."""

    MIGRATED = "migrated"        # migrations were applied
    CURRENT = "current"          # the database was at (or past) this build's newest migration: nothing applied
    FAILED = "failed"            # a migration failed and rolled back: the database is at the last good version


class PromotionStatus(StrEnum):
    """One promotion of a service (`services.<name>.promotions.<target env>`)."""

    PROMOTED = "promoted"
    UNCHANGED = "unchanged"      # the target's tags already answered the digest


def now_iso() -> str:
    """UTC now as RFC 3339 with second precision (`2026-11-29T13:47:01Z`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

