"""Commits as the versioning reads them: conventional fields, the breaking flag, and reverts.

`parse_commit` reads one message (Conventional Commits 1.0 header, `BREAKING CHANGE:` footer, and what
`git revert` writes); `resolve_reverts` decides which commits of a range a release contains. The next
version and the changelog both go through it, so they always agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pipeline.tools.git import RawCommit

SHORT_SHA_LEN = 8

# Conventional Commits 1.0: `type(scope)!: description`; the type is case-insensitive.
_HEADER = re.compile(
    r"(?P<type>[A-Za-z][A-Za-z0-9-]*)(?:\((?P<scope>[^()\r\n]*)\))?(?P<bang>!)?: +(?P<desc>\S.*)")
_BREAKING_FOOTER = re.compile(r"^BREAKING[ -]CHANGE: *(?P<note>.*)$", re.MULTILINE)
# `git revert` writes `Revert "<subject>"` (git >= 2.43: `Reapply "<subject>"` when reverting a revert) and
# a body line `This reverts commit <sha>.`; the Angular convention writes `revert: <subject>` with that body.
_REVERT_SUBJECT = re.compile(r'(?:Revert|Reapply) "(?P<inner>.*)"')
_REVERTS_SHA = re.compile(r"\bThis reverts commit (?P<sha>[0-9a-fA-F]{7,64})\b")
# `git revert -m N <merge>` adds ", reversing\nchanges made to <parent N>." (the mainline kept).
_MAINLINE = re.compile(r"\breversing\s+changes made to (?P<sha>[0-9a-fA-F]{7,64})\b")


@dataclass(frozen=True)
class ConventionalCommit:
    sha: str
    subject: str
    type: str | None  # None: not a conventional commit
    scope: str | None
    description: str
    breaking: bool
    breaking_note: str | None = None
    merge: bool = False
    revert: bool = False                 # a revert commit (git's `Revert "…"`, `revert:` type, or the body line)
    reverts_sha: str | None = None       # the SHA (or prefix) named by "This reverts commit <sha>"
    reverts_subject: str | None = None   # the subject it names (`Revert "<subject>"` / `revert: <subject>`)
    reverts_mainline: str | None = None  # a merge's revert: the parent kept ("reversing changes made to <sha>")
    parents: tuple[str, ...] = ()

    @property
    def short_sha(self) -> str:
        return self.sha[:SHORT_SHA_LEN]


def parse_commit(raw: RawCommit) -> ConventionalCommit:
    """A commit message → its conventional fields, breaking flag and revert target (if it is a revert)."""
    subject, _, body = raw.message.partition("\n")
    subject = subject.strip()
    footer = _BREAKING_FOOTER.search(body)
    note = footer.group("note").strip() if footer else None
    sha_ref = _REVERTS_SHA.search(body)
    quoted = _REVERT_SUBJECT.fullmatch(subject)
    m = _HEADER.fullmatch(subject)
    ctype = m.group("type").lower() if m else None
    revert = bool(sha_ref or quoted or ctype == "revert")
    reverts_subject = quoted.group("inner") if quoted else (m.group("desc").strip() if m and ctype == "revert"
                                                            else None)
    reverts_sha = sha_ref.group("sha").lower() if sha_ref else None
    mainline = _MAINLINE.search(body)
    parsed = ConventionalCommit(raw.sha, subject, None, None, subject, footer is not None, note,
                                merge=len(raw.parents) > 1, revert=revert, reverts_sha=reverts_sha,
                                reverts_subject=reverts_subject, parents=tuple(raw.parents),
                                reverts_mainline=mainline.group("sha").lower() if mainline else None)
    if not m:
        return parsed
    return replace(parsed, type=ctype, scope=m.group("scope") or None, description=m.group("desc").strip(),
                   breaking=bool(m.group("bang")) or footer is not None)


# ------------------------------------------------------------------ reverts

@dataclass(frozen=True)
class ResolvedCommits:
    effective: tuple[ConventionalCommit, ...]  # what the release contains, newest first
    cancelled: tuple[tuple[ConventionalCommit, ConventionalCommit], ...]  # (revert, its target), both dropped
    dropped: int = 0  # commits left out: each pair, plus the branch commits a reverted merge brought in


def resolve_reverts(commits: list[ConventionalCommit] | tuple[ConventionalCommit, ...]) -> ResolvedCommits:
    """Drop every commit whose revert is in the same range, with the revert (commits newest first).

    Walking from the newest: a revert whose target (by the SHA of "This reverts commit <sha>", else by the
    reverted subject, nearest older first) is an older, still-standing commit of the range cancels it and
    disappears with it; a commit already cancelled is skipped, so a revert of a revert restores the
    original. A revert whose target is not in the range reverts released work and stays (a change itself).
    A revert of a merge (`git revert -m N`) also cancels the commits the merge brought in: those of the
    range reachable from the merge but not from the mainline parent it kept (git's `<mainline>..<merge>`).
    """
    items = list(commits)
    cancelled: set[str] = set()
    pairs: list[tuple[ConventionalCommit, ConventionalCommit]] = []
    effective: list[ConventionalCommit] = []
    for i, c in enumerate(items):
        if c.sha in cancelled:
            continue
        target = _revert_target(c, items[i + 1:], cancelled) if c.revert else None
        if target is not None:
            cancelled.update((c.sha, target.sha))
            if target.merge:
                cancelled.update(_brought_in(target, c.reverts_mainline, items))
            pairs.append((c, target))
            continue
        effective.append(c)
    effective = [c for c in effective if c.sha not in cancelled]
    return ResolvedCommits(tuple(effective), tuple(pairs), len(items) - len(effective))


def _brought_in(merge: ConventionalCommit, mainline: str | None, items: list[ConventionalCommit]) -> set[str]:
    """SHAs of the range's commits reachable from `merge` but not from its mainline parent (the first parent,
    or the one `reversing changes made to` names). Commits outside the range are released: not walked."""
    by_sha = {c.sha: c for c in items}
    keep = next((p for p in merge.parents if mainline and p.lower().startswith(mainline)), None) \
        or (merge.parents[0] if merge.parents else None)

    def reach(start: str | None) -> set[str]:
        seen: set[str] = set()
        todo = [start] if start in by_sha else []
        while todo:
            sha = todo.pop()
            if sha not in seen:
                seen.add(sha)
                todo.extend(p for p in by_sha[sha].parents if p in by_sha)
        return seen

    return reach(merge.sha) - reach(keep)


def _revert_target(c: ConventionalCommit, older: list[ConventionalCommit],
                   cancelled: set[str]) -> ConventionalCommit | None:
    standing = [o for o in older if o.sha not in cancelled]
    if c.reverts_sha:
        return next((o for o in standing if o.sha.lower().startswith(c.reverts_sha)), None)
    if c.reverts_subject:
        return next((o for o in standing if o.subject == c.reverts_subject), None)
    return None
