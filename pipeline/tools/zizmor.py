"""zizmor adapter: audit GitHub Actions workflows offline, return zizmor's findings as dicts (JSON format v1).

zizmor (https://docs.zizmor.sh, PyPI wheel `zizmor`) is a static analyser of GitHub Actions: unpinned actions,
credentials persisted by checkouts, broad permissions, template injection. `--offline` keeps it from asking
GitHub's API (the audits that need it are skipped), so it runs air-gapped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageFailed
from pipeline.tools.proc import find_tool, run


def audit(workflows: Sequence[Path], *, timeout: float = 120) -> list[dict[str, Any]]:
    """zizmor's findings for all files in one call: [{ident, desc, url, determinations: {severity,
    confidence}, locations: [{symbolic: {key, annotation, kind}, concrete: {location: {start_point: {row}}}}]}].

    Rows are 0-based. Raises ToolMissing (exit 6) without zizmor, StageFailed when it fails or prints no JSON.
    """
    if not workflows:
        return []
    beside = Path(sys.executable).parent / "zizmor"   # the wheel installs it beside this interpreter (the venv)
    exe = str(beside) if beside.is_file() else \
        find_tool("zizmor", "run `invoke bootstrap` (installs the zizmor wheel of the dev extras)")
    # --no-exit-codes: findings are not an error here; the lint gate decides what blocks.
    res = run([exe, "--offline", "--format", "json", "--no-exit-codes", "--no-progress", *workflows],
              timeout=timeout, check=False, what="zizmor")
    if not res.ok:
        raise StageFailed(f"zizmor failed (exit {res.returncode}): {res.stderr.strip()[-300:]}")
    try:
        data = json.loads(res.stdout or "[]")
    except json.JSONDecodeError as exc:
        raise StageFailed(f"zizmor printed no JSON: {res.stdout[:200]}") from exc
    return [d for d in data if isinstance(d, dict)]
