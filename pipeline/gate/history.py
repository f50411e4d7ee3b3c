"""What changed since the last scan of a subject: the vulnerabilities a new image no longer has, and new ones.

Pure. The scan stage keeps, per environment, the vulnerability keys of the last scan of every subject (a
service or an infra image) in a small JSON file; after each scan it compares the new report with that record,
so a remediation (a newer Go, a patched package) shows up as "resolved: CVE-…" in the log and the report.

A key is "<vulnerability ID> <package>" (CVE-2025-22871 stdlib): the same CVE in two packages counts twice.
Every vulnerability of the report counts, before the policy (ignored and unfixed ones too): the comparison
is about what the image contains, not about what the gate decided.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.manifest import atomic_write
from pipeline.gate.policy import Finding


@dataclass(frozen=True)
class Comparison:
    """The difference between the previous scan of a subject and this one."""

    previous_image: str           # image ID scanned last time
    previous_at: str              # ISO time of that scan
    resolved: tuple[str, ...]     # keys found then, not now
    introduced: tuple[str, ...]   # keys found now, not then

    def to_dict(self) -> dict[str, Any]:
        return {"previous_image": self.previous_image, "previous_at": self.previous_at,
                "resolved": list(self.resolved), "introduced": list(self.introduced)}


def vulnerability_keys(findings: Iterable[Finding]) -> list[str]:
    """Sorted, unique "<ID> <package>" keys of the vulnerability findings (other kinds are left out)."""
    return sorted({f"{f.id} {f.package}" for f in findings if f.kind == "vulnerability"})


def compare(previous: Mapping[str, Any] | None, image_id: str, keys: Iterable[str]) -> Comparison | None:
    """Compare with the previous record {"image_id", "at", "keys"}; None when there is none or the image is the same.

    The same image scanned again (a new DB, say) is not a remediation: no comparison is made for it.
    """
    if not previous or previous.get("image_id") == image_id:
        return None
    before, now = set(previous.get("keys") or ()), set(keys)
    return Comparison(str(previous.get("image_id", "")), str(previous.get("at", "")),
                      tuple(sorted(before - now)), tuple(sorted(now - before)))


def load_history(path: Path) -> dict[str, Any]:
    """The per-subject records of one environment ({} when there is no file yet or it is unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_history(path: Path, history: Mapping[str, Any]) -> None:
    atomic_write(path, json.dumps(history, indent=2, sort_keys=True) + "\n")


def summary_line(subject: str, c: Comparison, limit: int = 12) -> str:
    """One line for the log: which findings the new image no longer has (and which are new)."""
    def ids(keys: tuple[str, ...]) -> str:
        shown = sorted({k.split(" ", 1)[0] for k in keys})
        more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
        return ", ".join(shown[:limit]) + more

    parts = [f"{len(c.resolved)} resolved" + (f" ({ids(c.resolved)})" if c.resolved else "")]
    parts.append(f"{len(c.introduced)} new" + (f" ({ids(c.introduced)})" if c.introduced else ""))
    return f"scan {subject}: since the last scan (image {c.previous_image[:19]}): {'; '.join(parts)}"


def changes_markdown(changes: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown section per subject: the findings resolved and introduced since its last scan."""
    lines: list[str] = []
    for subject, c in changes.items():
        lines += ["", f"## {subject}: changes since the last scan (image {str(c.get('previous_image', ''))[:19]})", ""]
        resolved, introduced = list(c.get("resolved") or ()), list(c.get("introduced") or ())
        lines.append(f"- resolved ({len(resolved)}): {', '.join(resolved) or 'none'}")
        lines.append(f"- new ({len(introduced)}): {', '.join(introduced) or 'none'}")
    return "\n".join(lines) + "\n"
