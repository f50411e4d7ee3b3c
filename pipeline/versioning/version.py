"""Version facts from git: SHA, branch, dirty state, the last semver release tag, the next version.

`read_version(path, versioning)` is the one entry point; everything after the git reads is plain Python
(`parse_commit`, `parse_release_tag`, `compute_next`) so the rules are testable on their own.

Rules (docs/versioning.md has the user-facing version):
- Release tags are `<tag_prefix>MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]` (prefix "v" by default; semver 2.0.0
  grammar, build metadata allowed and ignored for precedence). Any other tag (`release-2024`, `v1.2`,
  `1.2.3.4`, `v01.2.3`) is ignored with a warning, never picked.
- The last release is the highest release tag reachable from HEAD (pre-releases included).
- The next version never sorts below a pre-release reachable from HEAD: after `v1.2.0` and `v2.0.0-rc.1`,
  fixes alone give 2.0.0, not 1.2.1 (semver 2.0.0 §11: 1.2.1 < 2.0.0-rc.1 < 2.0.0).
- The next version comes from the conventional commits since the last *final* release, through the bump
  rules (pipeline/versioning/rules.py; default: `feat` → minor, `fix`/`perf`/revert → patch, `type!:` or a
  `BREAKING CHANGE:` footer → major, minor below 1.0.0 when [versioning] breaking_below_1 = "minor").
  Merge commits are skipped. Non-conventional commits bump patch only with non_conventional = "patch".
  No release tag at all → [versioning] first_version.
- A commit and its revert inside the range cancel out (both dropped), a revert of a revert re-applies the
  original; a revert whose target is older than the range (already released) is itself a change (patch by
  default, as semantic-release does). `resolve_reverts` (pipeline/versioning/commits.py) is the one place
  this is decided: the next version and the changelog both go through it.
- A shallow clone whose history since the last release cannot be read (no final release tag visible, or the
  shallow boundary inside the range) has no known next version (`NextVersion.known` is False) and no
  semver version: the fix is `git fetch --unshallow --tags`.
- When no release tag is reachable but a tag that looks like a release misses the tag format (`1.2.3` with
  prefix "v", `v1.2`), the next version is unknown too (pipeline/versioning/near_tags.py), with
  the fix in `NextVersion.fix`: counting from first_version would make up a version below a published one.
- Short SHAs are a fixed 8 characters, so a shallow CI clone and a full clone give the same tags.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import semver

from pipeline.core.config import Config, Versioning
from pipeline.core.errors import UsageError
from pipeline.tools.git import GitRepo
from pipeline.versioning.commits import SHORT_SHA_LEN as SHORT_SHA_LEN  # re-exported
from pipeline.versioning.commits import ConventionalCommit as ConventionalCommit
from pipeline.versioning.commits import ResolvedCommits as ResolvedCommits
from pipeline.versioning.commits import parse_commit as parse_commit
from pipeline.versioning.commits import resolve_reverts as resolve_reverts
from pipeline.versioning.near_tags import near_release_tag, unread_release_reason
from pipeline.versioning.rules import RANK, commit_release

DIRTY_HASH_LEN = 8
SHALLOW_FIX = "git fetch --unshallow --tags"
PARTS = ("major", "minor", "patch")
DEFAULT_VERSIONING = Versioning()   # [versioning] absent: the config's defaults

_CORE = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_PRE_LABEL = re.compile(r"[A-Za-z][0-9A-Za-z-]*")


# ------------------------------------------------------------------ commits

def commit_part(c: ConventionalCommit, versioning: Versioning) -> str | None:
    """The bump one commit asks for (before the below-1.0.0 rule): the bump rules of [versioning]."""
    return commit_release(c, versioning)


# ------------------------------------------------------------------ tags

def parse_release_tag(name: str, prefix: str) -> semver.Version | None:
    """The version a release tag names, or None when the tag is not `<prefix>X.Y.Z[-PRE][+BUILD]`."""
    if not name.startswith(prefix):
        return None
    core = name[len(prefix):]
    if not _CORE.fullmatch(core):
        return None
    try:
        return semver.Version.parse(core)
    except ValueError:
        return None


@dataclass(frozen=True)
class ReleaseTag:
    tag: str
    version: semver.Version
    sha: str


# ------------------------------------------------------------------ next version

@dataclass(frozen=True)
class NextVersion:
    version: semver.Version | None  # None: nothing to release, or not known (known=False)
    part: str | None  # the part that was bumped, "first" for the first release
    reason: str
    known: bool = True  # False: the history since the last release cannot be read (shallow clone)
    fix: str = ""       # when not known: the command or setting that makes it readable

    @property
    def fix_line(self) -> str:
        """The fix as a user runs it: `run: git fetch --unshallow --tags` for a shallow clone, else as is."""
        return f"run: {self.fix}" if self.fix == SHALLOW_FIX else self.fix


def compute_next(
    *,
    last_final: ReleaseTag | None,
    last: ReleaseTag | None,
    commits: list[ConventionalCommit] | tuple[ConventionalCommit, ...],
    versioning: Versioning,
    part: str = "auto",
    pre: str | None = None,
) -> NextVersion:
    """The next version. `commits` are those since `last_final` (all history when there is none)."""
    if part not in ("auto", *PARTS):
        raise UsageError(f"unknown --part '{part}'", "use auto, major, minor or patch")
    if pre is not None and not _PRE_LABEL.fullmatch(pre):
        raise UsageError(f"invalid pre-release label '{pre}'",
                         "use letters, digits and '-', starting with a letter (e.g. rc, beta)")

    if last_final is None:
        # No final release yet: the first one (or the version earlier pre-releases were heading to).
        target = last.version.finalize_version() if last else semver.Version.parse(versioning.first_version)
        src = f"pre-release {last.tag}" if last else "no release tag yet: [versioning] first_version"
        nv = NextVersion(target, "first", f"first release ({src})")
    elif part == "auto":
        resolved = resolve_reverts(commits)
        effective = resolved.effective
        kinds = Counter(_kind(c) for c in effective if not c.merge)
        wanted = max((commit_part(c, versioning) for c in effective), key=lambda p: RANK[p], default=None)
        since = f"since {last_final.tag}"
        if resolved.dropped:
            since += f" ({resolved.dropped} commit(s) cancelled with their revert, reverts included)"
        if wanted is None:
            if not kinds:
                what = "only merge commits" if effective else ("no commits" if not commits else "nothing left")
                return NextVersion(None, None, f"{what} {since}")
            detail = _describe(kinds)
            extra = ""
            if kinds.get("non-conventional") and versioning.non_conventional == "none":
                extra = '; non-conventional commits bump nothing ([versioning] non_conventional = "none")'
            what = ("no feat, fix, perf or breaking commit" if versioning.preset != "commitizen"
                    and not versioning.bump_rules else "no commit that the bump rules release")
            return NextVersion(None, None, f"{what} {since} ({detail}){extra}")
        chosen = wanted
        note = ""
        if wanted == "major" and last_final.version.major == 0 and versioning.breaking_below_1 == "minor":
            chosen = "minor"
            note = " (breaking change below 1.0.0 bumps minor: [versioning] breaking_below_1)"
        target = _bump(last_final.version, chosen)
        if last is not None and last.version.prerelease and last.version.finalize_version() > target:
            # a pre-release already in HEAD's history heads to a higher version: never release below it
            target = last.version.finalize_version()
            note += f" (raised to {target}: the pre-release {last.tag} is already in the history)"
        nv = NextVersion(target, chosen, f"{chosen}: {_describe(kinds)} {since}{note}")
    else:
        nv = NextVersion(_bump(last_final.version, part), part, f"{part}: requested with --part")

    if pre is None or nv.version is None:
        return nv
    target = nv.version
    if last and last.version.prerelease and last.version.finalize_version() == target \
            and str(last.version.prerelease).split(".")[0] == pre:
        version = last.version.bump_prerelease(pre)
    else:
        version = target.replace(prerelease=f"{pre}.1")
    return NextVersion(version, nv.part, f"{nv.reason}; pre-release '{pre}'")


def _bump(v: semver.Version, part: str) -> semver.Version:
    if part == "major":
        return v.bump_major()
    if part == "minor":
        return v.bump_minor()
    return v.bump_patch()


def _kind(c: ConventionalCommit) -> str:
    if c.breaking:
        return "breaking"
    if c.revert:
        return "revert"
    return c.type or "non-conventional"


def _describe(kinds: Counter[str]) -> str:
    order = ["breaking", "feat", "fix", "perf", "revert"]
    keys = sorted(kinds, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{kinds[k]} {k}" for k in keys)


# ------------------------------------------------------------------ the facts

@dataclass(frozen=True)
class Version:
    """Everything the pipeline needs to know about the source revision it builds.

    `to_dict()` is the stable JSON of `invoke version --json` (schema 1, documented in docs/versioning.md).
    """

    sha: str
    short_sha: str
    branch: str | None  # None when HEAD is detached (and VEZA_BRANCH did not name it)
    detached: bool
    dirty: bool
    dirty_hash: str | None  # short hash of the uncommitted diff + untracked files; None when clean
    dirty_paths: tuple[str, ...]
    shallow: bool
    tag_prefix: str
    first_version: str
    last: ReleaseTag | None  # highest release tag reachable from HEAD, pre-releases included
    last_final: ReleaseTag | None  # highest final (non pre-release) release tag reachable from HEAD
    head_tags: tuple[str, ...]  # release tags pointing at HEAD
    commits_since: int  # commits from the last release tag to HEAD (all commits when no tag)
    next: NextVersion
    commits: tuple[ConventionalCommit, ...] = field(repr=False)  # since last_final, newest first
    ignored_tags: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    head_time: str = ""  # HEAD's commit time, UTC ISO 8601 (the build timestamp); not part of to_dict()

    @property
    def on_tag(self) -> bool:
        """HEAD is exactly the last release tag's commit."""
        return self.last is not None and self.last.sha == self.sha

    @property
    def is_release(self) -> bool:
        """HEAD is a release tag and the tree is clean: the build is exactly that release."""
        return self.on_tag and not self.dirty

    @property
    def semver(self) -> str | None:
        """The release version, or a development pre-release that names this exact source tree.

        `X.Y.Z-dev.N.sha-<short>[.dirty-<hash>]`: X.Y.Z is the version this work heads to, N the commits
        since the last release tag. Semver would put the SHA in build metadata (`+sha`), but Docker tags
        cannot hold '+', so it is a pre-release identifier (`sha-` keeps it non-numeric, hence valid).
        None when the history since the last release cannot be read (shallow clone, `next.known` False):
        a version made up from a truncated history would sort below releases that exist.
        """
        if self.is_release and self.last:
            return str(self.last.version)
        if not self.next.known:
            return None
        if self.next.version is not None:
            base = self.next.version.finalize_version()
        elif self.last is not None:
            lv = self.last.version
            base = lv.finalize_version() if lv.prerelease else lv.bump_patch()
        else:
            base = semver.Version.parse(self.first_version)
        dev = f"{base}-dev.{self.commits_since}.sha-{self.short_sha}"
        return f"{dev}.dirty-{self.dirty_hash}" if self.dirty else dev

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (schema 1). Keys are only ever added, never renamed or removed.

        schema          1
        sha             full commit SHA of HEAD
        short_sha       first 8 characters of sha
        branch          checked-out branch, or null when HEAD is detached (VEZA_BRANCH names it in CI)
        detached        true when HEAD is detached
        dirty           true when there are uncommitted changes (untracked, non-ignored files included)
        dirty_hash      8-hex hash of those changes (null when clean): two different dirty trees differ
        dirty_files     number of changed paths
        shallow         true in a shallow clone
        tag_prefix      release tag prefix from pipeline.toml ("v")
        last_tag        highest release tag reachable from HEAD (pre-releases included), or null
        last_version    its version without the prefix ("1.4.0-rc.1"), or null
        last_release    highest final release version reachable from HEAD ("1.3.0"), or null
        on_tag          HEAD is exactly last_tag
        head_tags       release tags pointing at HEAD
        commits_since   commits from last_tag to HEAD (all commits when there is no tag)
        release         on_tag and clean: this build is exactly last_version
        version         last_version when release, else the development pre-release
                        "X.Y.Z-dev.N.sha-<short_sha>[.dirty-<dirty_hash>]"; null when next_known is false
        next_version    the version `invoke bump` would tag (auto part, no pre-release), or null
        next_known      false when the history since the last release cannot be read (shallow clone)
        bump            "major" | "minor" | "patch" | "first" | null
        bump_reason     one line saying why (and, when next_known is false, how to fix it)
        ignored_tags    tags that are not release tags (ignored)
        warnings        one-line warnings
        """
        return {
            "schema": 1,
            "sha": self.sha,
            "short_sha": self.short_sha,
            "branch": self.branch,
            "detached": self.detached,
            "dirty": self.dirty,
            "dirty_hash": self.dirty_hash,
            "dirty_files": len(self.dirty_paths),
            "shallow": self.shallow,
            "tag_prefix": self.tag_prefix,
            "last_tag": self.last.tag if self.last else None,
            "last_version": str(self.last.version) if self.last else None,
            "last_release": str(self.last_final.version) if self.last_final else None,
            "on_tag": self.on_tag,
            "head_tags": list(self.head_tags),
            "commits_since": self.commits_since,
            "release": self.is_release,
            "version": self.semver,
            "next_version": str(self.next.version) if self.next.version else None,
            "bump": self.next.part,
            "bump_reason": self.next.reason,
            "ignored_tags": list(self.ignored_tags),
            "warnings": list(self.warnings),
            "next_known": self.next.known,
        }


def read_version(path: Path | str, versioning: Versioning | None = None, *,
                 branch_override: str | None = None) -> Version:
    """Read the facts of the repository at `path` (or a parent of it).

    branch_override names the branch when HEAD is detached (CI checkouts are; pass $VEZA_BRANCH).
    """
    cfg = versioning or DEFAULT_VERSIONING
    repo = GitRepo(path)
    head = repo.head_sha()
    branch = repo.branch()
    detached = branch is None
    if detached and branch_override:
        branch = branch_override
    warnings: list[str] = []

    releases: list[ReleaseTag] = []
    ignored: list[str] = []
    for ref in repo.tags():
        v = parse_release_tag(ref.name, cfg.tag_prefix)
        if v is None:
            ignored.append(ref.name)
        else:
            releases.append(ReleaseTag(ref.name, v, ref.sha))
    if ignored:
        shown = ", ".join(sorted(ignored)[:8]) + (", …" if len(ignored) > 8 else "")
        warnings.append(f"ignored {len(ignored)} tag(s) that are not release tags "
                        f"({cfg.tag_prefix}MAJOR.MINOR.PATCH[-PRE][+BUILD]): {shown}")

    near = [t for name in ignored if (t := near_release_tag(name, cfg.tag_prefix)) is not None]
    merged = repo.tags_merged_into_head() if releases or near else set()
    reachable = [r for r in releases if r.tag in merged]
    last = max(reachable, key=lambda r: r.version, default=None)
    finals = [r for r in reachable if not r.version.prerelease]
    last_final = max(finals, key=lambda r: r.version, default=None)
    head_tags = tuple(r.tag for r in sorted(releases, key=lambda r: r.version) if r.sha == head)

    shallow = repo.is_shallow()
    if shallow and last is None:
        warnings.append("shallow clone with no release tag in the fetched history: the last release may be "
                        "older than the clone depth (run: git fetch --unshallow --tags)")

    rev_range = f"{last_final.sha}..HEAD" if last_final else "HEAD"
    commits = tuple(parse_commit(c) for c in repo.commits(rev_range))
    # the log above already counts them unless the last tag is a pre-release after the last final one
    commits_since = len(commits) if last is None or last == last_final else repo.count(f"{last.sha}..HEAD")
    truncated = shallow_gap(shallow, last_final, commits, repo.shallow_boundary() if shallow else set())
    # only when no release tag is read at all: then the count would start from first_version, below them
    unread = unread_release_reason([t for t in near if t.name in merged], cfg.tag_prefix) if last is None else None
    if truncated:
        nxt = NextVersion(None, None, truncated, known=False, fix=SHALLOW_FIX)
        if last is not None:
            warnings.append(truncated)
    elif unread:
        nxt = NextVersion(None, None, unread[0], known=False, fix=unread[1])
        warnings.append(f"{unread[0]} (fix: {unread[1]})")
    else:
        nxt = compute_next(last_final=last_final, last=last, commits=commits, versioning=cfg)
    if last_final is not None and last_final.sha == head and nxt.version is None and nxt.known:
        nxt = NextVersion(None, None, f"HEAD is the release {last_final.tag}")

    changed, untracked = repo.changed_paths()
    dirty_paths = tuple(changed)
    dirty_hash = repo.dirty_digest(untracked)[:DIRTY_HASH_LEN] if dirty_paths else None

    return Version(
        sha=head, short_sha=head[:SHORT_SHA_LEN], branch=branch, detached=detached,
        dirty=bool(dirty_paths), dirty_hash=dirty_hash, dirty_paths=dirty_paths, shallow=shallow,
        tag_prefix=cfg.tag_prefix, first_version=cfg.first_version, last=last, last_final=last_final,
        head_tags=head_tags, commits_since=commits_since, next=nxt, commits=commits,
        ignored_tags=tuple(sorted(ignored)), warnings=tuple(warnings), head_time=repo.head_time(),
    )


def shallow_gap(shallow: bool, last_final: ReleaseTag | None, commits: tuple[ConventionalCommit, ...],
                boundary: set[str]) -> str | None:
    """Why the next version cannot be known from this clone, or None when its history is complete enough.

    A shallow clone hides the commits behind its boundary (the commits listed in `.git/shallow`, whose
    parents were not fetched). The range since the last final release is readable only when that release
    tag is visible and no commit of the range sits on the boundary.
    """
    if not shallow:
        return None
    fix = f"run: {SHALLOW_FIX}"
    if last_final is None:
        return ("next version unknown: shallow clone with no final release tag in the fetched history "
                f"(the last release may be behind the clone depth; {fix})")
    if any(c.sha in boundary for c in commits):
        return (f"next version unknown: the shallow clone cuts the history since {last_final.tag} "
                f"(commits between may be missing; {fix})")
    return None


def read_project_version(config: Config, path: Path | str | None = None) -> Version:
    """The Version of the project's repository (config.root unless path), as every task computes it:
    [versioning] from pipeline.toml, and $VEZA_BRANCH naming the branch of a detached CI checkout."""
    return read_version(path or config.root, config.versioning,
                        branch_override=os.environ.get("VEZA_BRANCH") or None)
