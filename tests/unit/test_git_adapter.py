"""The git adapter (pipeline.tools.git) against real repositories made with the git CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.core.errors import GitStateError
from pipeline.tools.git import GitRepo


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_COMMITTER_DATE": "2026-01-02T03:04:05+02:00",
           "GIT_AUTHOR_DATE": "2026-01-02T03:04:05+02:00", "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True,
                          timeout=30).stdout.strip()


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "feature/x")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "feat: a")
    return repo


def test_head_facts_from_a_nested_directory(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "sub").mkdir()
    r = GitRepo(repo / "sub")
    assert r.root == repo
    assert r.head_sha() == _git(repo, "rev-parse", "HEAD")
    assert r.head_time() == "2026-01-02T01:04:05Z"          # the committer time, in UTC
    assert r.branch() == "feature/x"                         # a branch name with a slash, whole
    assert not r.is_shallow() and r.shallow_boundary() == set()


def test_detached_head_has_no_branch(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _git(repo, "checkout", "-q", "--detach")
    assert GitRepo(repo).branch() is None


def test_bare_missing_and_empty_repositories_are_one_line_errors(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "--bare", "bare.git")
    with pytest.raises(GitStateError, match="bare repository"):
        GitRepo(tmp_path / "bare.git")
    with pytest.raises(GitStateError, match="not a git repository"):
        GitRepo(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    _git(tmp_path / "empty", "init", "-q")
    with pytest.raises(GitStateError, match="has no commits yet"):
        GitRepo(tmp_path / "empty")


def test_dirty_digest_follows_the_bytes_of_the_change(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    r = GitRepo(repo)
    (repo / "a.txt").write_bytes(b"a\n\xff\xfe not utf-8\n")
    changed, untracked = r.changed_paths()
    first = r.dirty_digest(untracked)
    assert changed == ["a.txt"] and untracked == []
    (repo / "a.txt").write_bytes(b"a\n\xff\xfd not utf-8\n")
    assert r.dirty_digest(untracked) != first
