"""Tag policy: which image tags an environment gets for a Version, decided before anything is built.

Tag kinds (Environment.tags, in pipeline.toml):
- `sha`          `sha-<short8>`, plus `-dirty-<hash8>` when the tree has uncommitted changes, so two different
                 dirty trees never share a tag (and the same dirty tree reuses its tag).
- `branch`       the branch name made a valid Docker tag: lowercased, every run of characters outside
                 [a-z0-9_.-] becomes '-', leading/trailing '-' and '.' dropped; over 128 characters it is cut
                 and ends with '-<hash8 of the full name>' so long names stay distinct. Names that would
                 look like another kind (`latest`, `sha-…`, a version) get a `branch-` prefix. Skipped (with
                 a note) when HEAD is detached and VEZA_BRANCH does not name the branch.
- `semver`       `X.Y.Z` (or `X.Y.Z-rc.N`) when HEAD is a release tag on a clean tree; otherwise the
                 development pre-release `X.Y.Z-dev.N.sha-<short8>[.dirty-<hash8>]` (see Version.semver):
                 Docker tags cannot contain '+', so the SHA is a pre-release identifier, not build metadata.
                 A release with build metadata (`v1.4.0+build.7`) gets the tag `1.4.0_build.7`: '+' becomes
                 '_', the convention Helm documents for chart versions stored as OCI tags. Skipped (with a
                 note) when the history cannot be read (shallow clone): no version is made up.
- `semver-minor` `X.Y` and `semver-major` `X`: moving tags, only for a final release on a clean tree
                 (skipped with a note otherwise: a moving tag must never point at a dev build or an rc).
- `latest`       `latest` (pipeline.toml refuses it for staging and prod).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pipeline.core.config import Environment
from pipeline.core.errors import GitStateError
from pipeline.versioning.version import Version

# OCI distribution spec ("Pulling manifests"): a tag is [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_TAG_LEN = 128
_LOOKS_RESERVED = re.compile(r"latest|sha-[0-9a-f]+.*|\d+(\.\d+){0,2}([-.].*)?")


@dataclass(frozen=True)
class TagInputs:
    """The version facts the tag policy reads: from a Version (planning) or from a manifest's recorded
    version facts (promotion), so both paths apply the one policy."""

    short_sha: str
    dirty: bool
    dirty_hash: str | None
    branch: str | None
    semver: str | None        # Version.semver: the release, the development pre-release, or None (unknown)
    is_release: bool          # HEAD is a release tag on a clean tree
    on_tag: bool
    final_release: bool       # is_release and that release is not a pre-release
    unknown_reason: str = ""  # why semver is None (a shallow clone's unreadable history)

    @classmethod
    def of(cls, v: Version) -> TagInputs:
        final = v.is_release and v.last is not None and not v.last.version.prerelease
        return cls(v.short_sha, v.dirty, v.dirty_hash, v.branch, v.semver, v.is_release, v.on_tag, final,
                   v.next.reason if v.semver is None else "")

    @classmethod
    def from_facts(cls, facts: dict[str, object]) -> TagInputs:
        """From `Version.to_dict()` (a manifest's `version`): the same inputs, read back."""
        release = bool(facts.get("release"))
        version = str(facts["version"]) if facts.get("version") else None
        final = release and version is not None and "-" not in version.split("+")[0]
        return cls(str(facts.get("short_sha") or ""), bool(facts.get("dirty")),
                   str(facts["dirty_hash"]) if facts.get("dirty_hash") else None,
                   str(facts["branch"]) if facts.get("branch") else None, version, release,
                   bool(facts.get("on_tag")), final,
                   "" if version else str(facts.get("bump_reason") or "the version is unknown"))


@dataclass(frozen=True)
class TagPlan:
    tags: tuple[str, ...]
    notes: tuple[str, ...]  # kinds skipped or degraded, one line each


def sha_tag(version: Version | TagInputs) -> str:
    tag = f"sha-{version.short_sha}"
    return f"{tag}-dirty-{version.dirty_hash}" if version.dirty else tag


def semver_tag(version: str) -> str:
    """A semver string as an image tag: '+' (build metadata) becomes '_' (Helm's rule for OCI tags).

    Raises GitStateError (exit 2) when the result breaks the OCI tag grammar, e.g. longer than 128
    characters (a very long pre-release or build label in the release tag).
    """
    tag = version.replace("+", "_")
    if not DOCKER_TAG.fullmatch(tag):
        why = f"{len(tag)} characters, the OCI limit is {MAX_TAG_LEN}" if len(tag) > MAX_TAG_LEN \
            else "characters outside [A-Za-z0-9_.-]"
        raise GitStateError(f"version {version} cannot be an image tag ({why})",
                            "release under a shorter pre-release/build label (git tag vX.Y.Z-rc.1)")
    return tag


def branch_tag(branch: str) -> str:
    """A valid Docker tag for a branch name (see the module docstring for the rules)."""
    s = re.sub(r"[^a-z0-9_.-]+", "-", branch.lower())
    s = re.sub(r"-{2,}", "-", s).strip("-.")
    if not s:
        s = "branch"
    if _LOOKS_RESERVED.fullmatch(s):
        s = f"branch-{s}"
    if len(s) > MAX_TAG_LEN:
        digest = hashlib.sha256(branch.encode()).hexdigest()[:8]
        s = f"{s[:MAX_TAG_LEN - 9].rstrip('-.')}-{digest}"
    return s


def plan_tags(env: Environment, source: Version | TagInputs) -> TagPlan:
    """The tags for every image built for (or promoted to) env, with a note for each kind skipped or degraded."""
    tags: list[str] = []
    notes: list[str] = []
    version = source if isinstance(source, TagInputs) else TagInputs.of(source)
    final_release = version.final_release
    for kind in env.tags:
        if kind == "sha":
            tags.append(sha_tag(version))
        elif kind == "branch":
            if version.branch:
                tags.append(branch_tag(version.branch))
            else:
                notes.append("branch tag skipped: HEAD is detached (set VEZA_BRANCH to name the branch)")
        elif kind == "semver":
            sem = version.semver
            if sem is None:
                notes.append(f"semver tag skipped: {version.unknown_reason}")
                continue
            tags.append(semver_tag(sem))
            if not version.is_release:
                why = "the tree is dirty" if version.on_tag else "HEAD is not on a release tag"
                notes.append(f"semver tag is the development pre-release {sem}: {why}")
        elif kind in ("semver-minor", "semver-major"):
            if final_release and version.semver is not None:
                major, minor = version.semver.split(".")[:2]
                tags.append(f"{major}.{minor}" if kind == "semver-minor" else major)
            else:
                head = "a pre-release" if version.is_release else "not a clean release tag"
                notes.append(f"{kind} tag skipped: moving tags follow final releases only (HEAD is {head})")
        elif kind == "latest":
            tags.append("latest")
        else:  # pipeline.core.config refuses unknown kinds; this guards a config built by hand
            raise GitStateError(f"unknown tag kind '{kind}' in environment '{env.name}'",
                                "use sha, branch, semver, semver-minor, semver-major or latest")
    unique = tuple(dict.fromkeys(tags))
    for t in unique:
        if not DOCKER_TAG.fullmatch(t):  # every rule above must keep tags valid; fail loudly if not
            raise AssertionError(f"tag policy produced an invalid Docker tag: {t!r}")
    if not unique:
        raise GitStateError(f"environment '{env.name}' gets no image tag: {'; '.join(notes)}",
                            "add \"sha\" to its tags in pipeline.toml, or set VEZA_BRANCH")
    return TagPlan(unique, tuple(notes))


def tags_for(env: Environment, version: Version | TagInputs) -> list[str]:
    """The image tags env gets for version, in the configured order (pure: no git, no engine)."""
    return list(plan_tags(env, version).tags)
