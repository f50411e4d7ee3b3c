"""The grouped changelog (Breaking changes, Features, Fixes, Performance, Reverts) from conventional commits.

Used by `invoke changelog` and as the message of the annotated tag `invoke bump` creates.
Merge commits are left out; other commits (docs, chore, non-conventional…) are counted, not listed.
A commit reverted inside the same range is left out with its revert (`resolve_reverts`, the same function
the next version uses, so the changelog and `invoke version` always agree); a revert of released work is
listed under Reverts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.versioning.commits import ConventionalCommit, resolve_reverts

GROUPS = (("breaking", "Breaking changes"), ("feat", "Features"), ("fix", "Fixes"), ("perf", "Performance"),
          ("revert", "Reverts"))


@dataclass(frozen=True)
class Changelog:
    title: str
    since: str | None  # the tag or revision it starts after; None = the whole history
    groups: tuple[tuple[str, tuple[ConventionalCommit, ...]], ...]  # (heading, commits oldest first)
    others: int  # commits not listed (docs, chore, non-conventional…)
    cancelled: int = 0  # commits left out because their revert is in the same range (revert included)

    @property
    def empty(self) -> bool:
        return not self.groups


def group_of(c: ConventionalCommit) -> str | None:
    if c.breaking:
        return "breaking"
    if c.revert:
        return "revert"
    return c.type if c.type in ("feat", "fix", "perf") else None


def build_changelog(commits: Iterable[ConventionalCommit], *, title: str, since: str | None) -> Changelog:
    """commits newest first (as git log gives them); entries are listed oldest first."""
    by: dict[str, list[ConventionalCommit]] = {key: [] for key, _ in GROUPS}
    others = 0
    resolved = resolve_reverts(tuple(commits))
    for c in reversed(resolved.effective):
        if c.merge:
            continue
        g = group_of(c)
        if g is None:
            others += 1
        else:
            by[g].append(c)
    groups = tuple((heading, tuple(by[key])) for key, heading in GROUPS if by[key])
    return Changelog(title, since, groups, others, resolved.dropped)


def entry(c: ConventionalCommit) -> str:
    scope = f"**{c.scope}:** " if c.scope else ""
    text = c.description
    if c.breaking and c.breaking_note and c.breaking_note != c.description:
        text = f"{text}: {c.breaking_note}"
    return f"- {scope}{text} ({c.short_sha})"


def render_markdown(cl: Changelog) -> str:
    since = f" (since {cl.since})" if cl.since else ""
    lines = [f"## {cl.title}{since}", ""]
    if cl.empty:
        lines.append("No feature, fix or breaking change.")
    for heading, commits in cl.groups:
        lines.append(f"### {heading}")
        lines.extend(entry(c) for c in commits)
        lines.append("")
    if cl.others:
        lines.append(f"{cl.others} other commit(s) (docs, chores, refactors, non-conventional) not listed.")
    if cl.cancelled:
        lines.append(f"{cl.cancelled} commit(s) left out: reverted within this range (reverts included).")
    return "\n".join(lines).rstrip() + "\n"
