"""A build record as the build stage writes it, for fixtures that make a Release manifest without building: with
the build's facts (origin, Dockerfile and context digests), which the sign stage requires (provenance never guesses
them)."""

from __future__ import annotations

from typing import Any

ORIGIN = {"commit": "0" * 40, "dirty": "false", "run_id": "fixture-build", "started_on": "2026-12-01T10:00:00Z",
          "finished_on": "2026-12-01T10:00:05Z", "builder": "buildkit", "builder_version": "26.1.5",
          "engine_version": "26.1.5+dfsg1"}


def built_record(image_id: str, commit: str = "", **extra: Any) -> dict[str, Any]:
    """{"status": "built", "image_id": …, origin (built at `commit`: the release's, as a fresh build is), digests,
    **extra} (extra wins)."""
    origin = {**ORIGIN, "commit": commit or ORIGIN["commit"]}
    return {"status": "built", "image_id": image_id, "duration_s": 0.1, "origin": origin,
            "dockerfile_digest": "sha256:" + "d" * 64, "context_digest": "sha256:" + "c" * 64, **extra}
