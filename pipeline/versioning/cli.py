"""The `invoke version`, `invoke bump` and `invoke changelog` tasks' logic (tasks.py stays thin).

Each function takes the repository path (default: the project root, where the config's pipeline.toml is) and an
optional Config, so tests run them against temporary repositories.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.core.config import Config, load_config
from pipeline.core.errors import GitStateError
from pipeline.tools.git import GitRepo
from pipeline.versioning.changelog import build_changelog, render_markdown
from pipeline.versioning.guards import require_clean_tree
from pipeline.versioning.tagging import plan_tags
from pipeline.versioning.version import Version, compute_next, parse_commit, parse_release_tag, read_project_version


def _config(config: Config | None) -> Config:
    # Versioning needs the service names and repositories only: skip the file existence checks.
    return config or load_config(check_files=False)


def _read(repo_path: Path | str | None, cfg: Config) -> Version:
    return read_project_version(cfg, repo_path or cfg.root)


def _warn(version: Version) -> None:
    for w in version.warnings:
        print(f"warning: {w}", file=sys.stderr)


def version_report(env_name: str, *, repo_path: Path | str | None = None,
                   config: Config | None = None) -> dict[str, Any]:
    """Version.to_dict() plus env, tags, tag_notes and images (service → full image references)."""
    cfg = _config(config)
    env = cfg.env(env_name)
    version = _read(repo_path, cfg)
    plan = plan_tags(env, version)
    data = version.to_dict()
    data["env"] = env.name
    data["tags"] = list(plan.tags)
    data["tag_notes"] = list(plan.notes)
    data["images"] = {s.name: [f"{env.repository(s)}:{t}" for t in plan.tags] for s in cfg.services}
    data["warnings"] = list(version.warnings)
    return data


def print_version(env_name: str, as_json: bool = False, *, repo_path: Path | str | None = None,
                  config: Config | None = None) -> dict[str, Any]:
    data = version_report(env_name, repo_path=repo_path, config=config)
    for w in data["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if as_json:
        print(json.dumps(data, indent=2))
        return data
    console = Console(highlight=False)
    facts = Table(title="Version", show_header=False, box=None, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column()
    branch = data["branch"] or "(detached HEAD)"
    if data["detached"] and data["branch"]:
        branch += " (detached HEAD, from VEZA_BRANCH)"
    dirty = f"yes ({data['dirty_files']} change(s), hash {data['dirty_hash']})" if data["dirty"] else "no"
    last = data["last_tag"] or "none"
    if data["last_tag"]:
        last += " (HEAD)" if data["on_tag"] else f" ({data['commits_since']} commit(s) ago)"
    rows = [
        ("commit", f"{data['sha']}" + (" (shallow clone)" if data["shallow"] else "")),
        ("branch", branch),
        ("dirty", dirty),
        ("last release tag", last),
        ("version", data["version"] or "unknown (see next version)"),
        ("next version", f"{data['next_version'] or ('none' if data['next_known'] else 'unknown')}: "
                         f"{data['bump_reason']}"),
    ]
    for k, v in rows:
        facts.add_row(k, escape(v))
    console.print(facts)
    images = Table(title=f"Images for env '{data['env']}'")
    images.add_column("service", no_wrap=True)
    images.add_column("image references", overflow="fold")
    for svc, refs in data["images"].items():
        images.add_row(svc, escape("\n".join(refs)))
    console.print(images)
    for note in data["tag_notes"]:
        console.print(escape(f"note: {note}"))
    return data


def bump_version(part: str = "auto", pre: str | None = None, dry_run: bool = False, *,
                 repo_path: Path | str | None = None, config: Config | None = None) -> str:
    """Create the next annotated release tag on HEAD (message: the changelog). Returns the tag name.

    Refuses with GitStateError (exit 2, one line): dirty tree; HEAD already carries a release tag (except
    releasing a pre-release's final version on the same commit); shallow clone with no visible tag;
    nothing to release; a version not greater than the last release, or a tag name already taken.
    """
    cfg = _config(config)
    version = _read(repo_path, cfg)
    # The argument checks (part, pre label) run before the git-state checks: usage errors first.
    nxt = compute_next(last_final=version.last_final, last=version.last, commits=version.commits,
                       versioning=cfg.versioning, part=part, pre=pre)
    require_clean_tree(version, "bump")
    if version.head_tags:
        head_tag = version.head_tags[-1]
        hv = parse_release_tag(head_tag, cfg.versioning.tag_prefix)
        if hv is None or not hv.prerelease or pre is not None:
            kind = "pre-release tag" if hv is not None and hv.prerelease else "release tag"
            fix = ("commit a change first, or run bump without --pre to release "
                   f"{hv.finalize_version()} on this commit" if hv is not None and hv.prerelease
                   else "commit the next change first; this commit is already released")
            raise GitStateError(
                f"refusing to tag: HEAD {version.short_sha} already carries the {kind} {head_tag}", fix)
    if not version.next.known:
        raise GitStateError(f"refusing to tag: {version.next.reason.split(' (')[0]}",
                            version.next.fix_line)
    if nxt.version is None:
        raise GitStateError(f"nothing to release: {nxt.reason}",
                            "use --part patch|minor|major to force a bump")
    tag = f"{cfg.versioning.tag_prefix}{nxt.version}"
    if version.last is not None and nxt.version <= version.last.version:
        raise GitStateError(
            f"refusing to tag {tag}: not greater than the last release {version.last.tag}",
            "choose a higher --part, or a later --pre label (labels sort alphabetically: alpha < beta < rc)",
        )
    repo = GitRepo(repo_path or cfg.root)
    taken = repo.rev_exists(f"refs/tags/{tag}")
    if taken is not None:
        raise GitStateError(f"refusing to tag {tag}: the tag already exists (on {taken[:8]}, not an ancestor "
                            "of HEAD)", "choose a higher --part or --pre, or delete the stray tag")
    since = version.last_final.tag if version.last_final else None
    message = render_markdown(build_changelog(version.commits, title=str(nxt.version), since=since))
    if dry_run:
        print(f"would create annotated tag {tag} on {version.short_sha} ({nxt.reason})")
        print(message, end="")
        return tag
    repo.create_annotated_tag(tag, message)
    print(f"created tag {tag} on {version.short_sha} ({nxt.reason})")
    print(f"publish it: git push origin {tag}")
    return tag


def print_changelog(since: str | None = None, *, repo_path: Path | str | None = None,
                    config: Config | None = None) -> str:
    """Print the grouped changelog of HEAD since a tag/revision (default: the last final release tag)."""
    cfg = _config(config)
    version = _read(repo_path, cfg)
    _warn(version)
    if since:
        repo = GitRepo(repo_path or cfg.root)
        sha = repo.rev_exists(since)
        if sha is None:
            raise GitStateError(f"unknown tag or revision '{since}'",
                                "list the release tags with: git tag -l")
        commits = tuple(parse_commit(c) for c in repo.commits(f"{sha}..HEAD"))
        start: str | None = since
    else:
        if not version.next.known:   # a changelog of a truncated history would not be the release's
            raise GitStateError(f"no changelog: {version.next.reason.split(' (')[0]}",
                                f"{version.next.fix_line} (or pass --since a tag in the fetched history)")
        commits = version.commits
        start = version.last_final.tag if version.last_final else None
    title = str(version.next.version) if version.next.version and not since else "Unreleased"
    text = render_markdown(build_changelog(commits, title=title, since=start))
    print(text, end="")
    return text
