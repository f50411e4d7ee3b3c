"""The running cluster's record on disk (state.json): which daemons run, since when, from which build.

Written after every daemon start, so a crash half-way through start still leaves what cluster-down needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.core.lock import file_lock
from pipeline.local.cluster import layout
from pipeline.tools.daemon import Daemon


@dataclass
class ClusterState:
    started_at: str = ""
    build_key: str = ""
    version: str = ""
    kubeconfig: str = str(layout.KUBECONFIG)
    ready_after_s: float | None = None
    daemons: list[Daemon] = field(default_factory=list)

    def to_json(self) -> str:
        d: dict[str, Any] = asdict(self)
        return json.dumps(d, indent=2) + "\n"

    def save(self) -> None:
        layout.STATE.mkdir(parents=True, exist_ok=True)
        tmp = layout.STATE_FILE.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(layout.STATE_FILE)


def load_state() -> ClusterState | None:
    try:
        raw = json.loads(layout.STATE_FILE.read_text())
    except (OSError, ValueError):
        return None
    daemons = [Daemon(**d) for d in raw.pop("daemons", [])]
    known = {k: v for k, v in raw.items() if k in ClusterState.__dataclass_fields__}
    return ClusterState(**known, daemons=daemons)


def clear_state() -> None:
    layout.STATE_FILE.unlink(missing_ok=True)


@contextmanager
def cluster_lock() -> Iterator[None]:
    """One cluster-up/down at a time on this machine."""
    layout.STATE.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.STATE, 0o755)
    with file_lock(layout.LOCK_FILE):
        yield
