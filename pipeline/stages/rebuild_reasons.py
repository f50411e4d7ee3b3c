"""Why rebuilt: what changed since the image a service would otherwise reuse, in words.

After every build or reuse, the service's InputRecord (file → hash list, build-argument hashes, base image
IDs, Dockerfile hash) is kept in the local cache (`<state_dir>/inputs/<service>.json`). The next plan
compares its own record with that one: "veza-backend-api: rebuild — main.go modified".
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.stages.plan import InputRecord

MAX_PATHS = 4   # paths named per kind of change; the rest are counted


@dataclass(frozen=True)
class InputChanges:
    """The difference between two InputRecords, item by item (paths, argument names, base references)."""

    dockerfile: bool
    added: tuple[str, ...]
    removed: tuple[str, ...]
    modified: tuple[str, ...]
    args: tuple[str, ...]
    bases: tuple[str, ...]
    platforms: tuple[tuple[str, ...], tuple[str, ...]] | None = None   # (before, after) when the list changed

    @property
    def empty(self) -> bool:
        return not (self.dockerfile or self.added or self.removed or self.modified or self.args or self.bases
                    or self.platforms)

    def describe(self) -> str:
        """One phrase: "main.go modified; build arg GREETING changed" ("" when nothing differs)."""
        parts = []
        if self.dockerfile:
            parts.append("Dockerfile modified")
        for paths, verb in ((self.modified, "modified"), (self.added, "added"), (self.removed, "removed")):
            if paths:
                named = ", ".join(paths[:MAX_PATHS])
                more = f" and {len(paths) - MAX_PATHS} more" if len(paths) > MAX_PATHS else ""
                parts.append(f"{named}{more} {verb}")
        if self.args:
            parts.append(f"build arg{'s' if len(self.args) > 1 else ''} {', '.join(self.args)} changed")
        if self.bases:
            parts.append(f"base image{'s' if len(self.bases) > 1 else ''} {', '.join(self.bases)} changed")
        if self.platforms:
            before, after = (", ".join(p) or "native" for p in self.platforms)
            parts.append(f"platforms {before} → {after}")
        return "; ".join(parts)


def compare(previous: InputRecord, current: InputRecord) -> InputChanges:
    """What differs from `previous` to `current` (sorted paths and names)."""
    old, new = previous.files, current.files
    arg_names = sorted(k for k in {*previous.args, *current.args} if previous.args.get(k) != current.args.get(k))
    base_refs = sorted(k for k in {*previous.bases, *current.bases} if previous.bases.get(k) != current.bases.get(k))
    return InputChanges(
        dockerfile=previous.dockerfile != current.dockerfile,
        added=tuple(sorted(set(new) - set(old))),
        removed=tuple(sorted(set(old) - set(new))),
        modified=tuple(sorted(p for p in set(old) & set(new) if old[p] != new[p])),
        args=tuple(arg_names),
        bases=tuple(base_refs),
        platforms=(previous.platforms, current.platforms) if previous.platforms != current.platforms else None,
    )


def why_rebuilt(previous: InputRecord | None, current: InputRecord) -> str:
    """The reason a build is needed, compared with the last image this service had (None: never recorded)."""
    if previous is None:
        return "no earlier build recorded"
    if previous.digest == current.digest:
        return "same inputs as the last image, but that image is gone"
    changes = compare(previous, current)
    return changes.describe() or "input digest scheme changed"


class InputCache:
    """The last InputRecord per service, one JSON file each under `directory` (written atomically)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, service: str) -> Path:
        return self.directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', service)}.json"

    def load(self, service: str) -> InputRecord | None:
        """The recorded inputs, or None when absent or unreadable (a cache, never an error)."""
        try:
            return InputRecord.from_json(json.loads(self._path(service).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, service: str, record: InputRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(service)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record.to_json(), sort_keys=True))
        os.replace(tmp, path)
