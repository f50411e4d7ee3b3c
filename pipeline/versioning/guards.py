"""Git-state guards that later stages call before acting (GitStateError: exit 2, one precise line)."""

from __future__ import annotations

from pipeline.core.config import Environment
from pipeline.core.errors import GitStateError
from pipeline.versioning.version import SHALLOW_FIX, Version


def _paths(version: Version, limit: int = 3) -> str:
    shown = ", ".join(version.dirty_paths[:limit])
    more = len(version.dirty_paths) - limit
    return f"{shown}, and {more} more" if more > 0 else shown


def require_clean_tree(version: Version, what: str) -> None:
    if version.dirty:
        n = len(version.dirty_paths)
        raise GitStateError(
            f"{what} requires a clean tree: {n} uncommitted change(s) ({_paths(version)})",
            "commit or remove them, then rerun",
        )


SEMVER_KINDS = ("semver", "semver-minor", "semver-major")


def require_readable_history(version: Version, env: Environment) -> None:
    """Refuse an environment that tags by version (or requires a release tag) when the history since the
    last release cannot be read (shallow clone, or a release tag outside the tag format): a version made
    up from it would be wrong. The fix is the one NextVersion.fix names."""
    if version.next.known or version.is_release:
        return
    if env.require_release_tag or any(k in SEMVER_KINDS for k in env.tags):
        fix = version.next.fix + (" (CI: fetch-depth: 0)" if version.next.fix == SHALLOW_FIX else "")
        raise GitStateError(f"{env.name} tags images by version, but {version.next.reason}", f"{fix}, then rerun")


def require_release_ready(version: Version, env: Environment, *, allow_prerelease: bool = False) -> None:
    """Refuse when env's policy (require_clean_tree, require_release_tag) does not accept this source.

    prod: "prod requires a clean tree and a semver tag on HEAD". A pre-release tag (v1.4.0-rc.1) does not
    satisfy require_release_tag unless allow_prerelease: prod ships final releases.
    """
    if env.require_clean_tree:
        require_clean_tree(version, env.name)
    if not env.require_release_tag:
        return
    head = f"HEAD {version.short_sha}"
    if not version.on_tag:
        if version.last is not None:
            where = f"{head} is {version.commits_since} commit(s) after {version.last.tag}"
        else:
            where = f"{head} has no release tag and none is reachable from it"
        raise GitStateError(
            f"{env.name} requires a semver release tag on HEAD: {where}",
            "run `invoke bump` on a clean tree to tag HEAD, or check out a release tag (git checkout vX.Y.Z)",
        )
    assert version.last is not None
    if version.last.version.prerelease and not allow_prerelease:
        final = version.last.version.finalize_version()
        raise GitStateError(
            f"{env.name} requires a final release tag on HEAD: {version.last.tag} is a pre-release",
            f"run `invoke bump` (without --pre) to release {final}, or deploy the pre-release to staging",
        )
    if version.dirty:  # on the tag but modified: the build would not be the tagged release
        raise GitStateError(
            f"{env.name} requires HEAD to be exactly {version.last.tag}: {len(version.dirty_paths)} "
            f"uncommitted change(s) ({_paths(version)})",
            "commit or remove them, then rerun",
        )
