"""Tags that look like releases but do not follow the configured tag format (`[versioning] tag_prefix`).

A project that releases with commitizen (default tag format `$version`: `1.2.3`) or that once tagged
`v1.2` and then adopts this pipeline (default prefix `v`) has releases the version logic does not read.
Counting from `first_version` would then make up a version below a published one (0.1.0 after 1.2.3), the
same fault as a shallow clone's unreadable history. So when no release tag is reachable, a reachable
near-miss tag makes the next version unknown, with the fix, instead of a made-up number. When release tags
are read, near misses stay ignored with a warning (docs/versioning.md: other tags are never picked).

A near miss is, after removing the configured prefix (or else a leading `v`/`V`), `MAJOR.MINOR` or
`MAJOR.MINOR.PATCH` with an optional `-pre-release` / `+build` (semver 2.0.0 shapes, leading zeros
tolerated). Tags of another component (`chart-1.0.0`, `release-2024`) are not near misses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NEAR = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:[-+][0-9A-Za-z.+-]*)?")


@dataclass(frozen=True)
class NearTag:
    name: str
    core: tuple[int, int, int]   # (major, minor, patch) it names; patch 0 when absent
    suggestion: str              # the tag name the configured format wants for that release


def near_release_tag(name: str, prefix: str) -> NearTag | None:
    """`name` as a near-miss release tag for `prefix`, or None. Callers pass only tags that are not release
    tags (parse_release_tag returned None)."""
    rest = name[len(prefix):] if prefix and name.startswith(prefix) else \
        name[1:] if name[:1] in ("v", "V") else name
    m = _NEAR.fullmatch(rest)
    if m is None:
        return None
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    return NearTag(name, (major, minor, patch), f"{prefix}{major}.{minor}.{patch}")


def unread_release_reason(near: list[NearTag], prefix: str) -> tuple[str, str] | None:
    """(reason, fix) naming the highest of the reachable near-miss tags `near`, or None when there is none."""
    if not near:
        return None
    top = max(near, key=lambda t: t.core)
    bare = not top.name.startswith(prefix) or not prefix
    reason = (f"next version unknown: tag '{top.name}' looks like a release but is not a release tag "
              f"({prefix}MAJOR.MINOR.PATCH); counting from it would be a guess")
    if bare and re.fullmatch(r"\d+\.\d+\.\d+.*", top.name) and prefix:
        fix = f'set [versioning] tag_prefix = "" in pipeline.toml, or tag that release {top.suggestion}'
    else:
        fix = f"tag that release {top.suggestion} (git tag {top.suggestion} {top.name}^{{}})"
    return reason, fix
