"""Git adapter (GitPython): the few repository facts the versioning needs, each call with a timeout.

Everything else in pipeline/ reads git through this module, so the version logic stays plain Python
over typed values (RawCommit, TagRef) and the git plumbing has one home.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import git

from pipeline.core.errors import GitStateError

TIMEOUT_S = 60  # local git commands on a repository of this size take milliseconds
_FIELD, _RECORD = "\x1f", "\x1e"


@dataclass(frozen=True)
class RawCommit:
    sha: str
    parents: tuple[str, ...]
    message: str  # full message: subject, blank line, body and footers


@dataclass(frozen=True)
class TagRef:
    name: str
    sha: str  # the commit the tag points at (annotated tags peeled)


class GitRepo:
    """One opened repository. Raises GitStateError (exit 2) for a missing repository or an empty one."""

    def __init__(self, path: Path | str) -> None:
        try:
            self.repo = git.Repo(str(path), search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise GitStateError(f"not a git repository: {path}",
                                "run inside the project's clone (or `git init` and commit)") from None
        if self.repo.bare:
            raise GitStateError(f"bare repository: {path}", "run inside a work tree")
        self.root = Path(self.repo.working_tree_dir or path)
        try:
            self.repo.head.commit  # noqa: B018 - raises ValueError when HEAD points at no commit
        except ValueError:
            raise GitStateError(f"repository {self.root} has no commits yet",
                                "commit something first") from None

    def _git(self, *args: str, strip: bool = True) -> str:
        try:
            out: str = self.repo.git.execute(["git", *args], kill_after_timeout=TIMEOUT_S,
                                             strip_newline_in_stdout=strip)
        except git.GitCommandError as exc:
            err = (exc.stderr or "").strip().replace("\n", " | ")
            raise GitStateError(f"git {' '.join(args[:3])} failed in {self.root}: {err}",
                                "check the repository state with `git status`") from None
        return out

    # ------------------------------------------------------------ HEAD
    def head_sha(self) -> str:
        return self.repo.head.commit.hexsha

    def head_time(self) -> str:
        """HEAD's commit time, UTC ISO 8601: a reproducible build timestamp (like SOURCE_DATE_EPOCH)."""
        from datetime import UTC

        return self.repo.head.commit.committed_datetime.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def branch(self) -> str | None:
        """The checked-out branch, or None when HEAD is detached."""
        if self.repo.head.is_detached:
            return None
        return self.repo.active_branch.name

    def is_shallow(self) -> bool:
        # what `git rev-parse --is-shallow-repository` checks, without a process
        return (Path(self.repo.common_dir) / "shallow").is_file()

    def shallow_boundary(self) -> set[str]:
        """SHAs of the commits whose parents a shallow clone did not fetch (`.git/shallow`; empty if full)."""
        path = Path(self.repo.common_dir) / "shallow"
        try:
            return {line.strip() for line in path.read_text().splitlines() if line.strip()}
        except FileNotFoundError:
            return set()

    # ------------------------------------------------------------ work tree
    def changed_paths(self) -> tuple[list[str], list[str]]:
        """(paths with uncommitted changes, untracked non-ignored paths among them), both sorted."""
        out = self._git("status", "--porcelain=v1", "-z", "--untracked-files=all", strip=False)
        paths: list[str] = []
        untracked: list[str] = []
        skip_next = False
        for e in (e for e in out.split("\0") if e):
            if skip_next:  # the source path of a rename/copy entry
                skip_next = False
                continue
            status, path = e[:2], e[3:]
            paths.append(path)
            if status == "??":
                untracked.append(path)
            skip_next = "R" in status or "C" in status
        return sorted(paths), sorted(untracked)

    def dirty_digest(self, untracked: list[str]) -> str:
        """sha256 over the diff against HEAD (staged + unstaged, binary-safe) and every untracked file.

        Same uncommitted state → same digest; any difference in content, mode or path → another digest.
        """
        h = hashlib.sha256()
        h.update(self._git("diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", strip=False)
                 .encode("utf-8", "surrogateescape"))
        for rel in untracked:
            h.update(b"\0untracked\0" + rel.encode("utf-8", "surrogateescape") + b"\0")
            p = self.root / rel
            if p.is_symlink():
                h.update(b"link:" + str(p.readlink()).encode())
            elif p.is_file():
                h.update(b"mode:%o\0" % (p.stat().st_mode & 0o111))
                with p.open("rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
        return h.hexdigest()

    # ------------------------------------------------------------ tags and history
    def tags(self) -> list[TagRef]:
        """Every tag with the commit it points at; tags pointing at non-commits are left out."""
        fmt = "%(refname:strip=2)%09%(objecttype)%09%(objectname)%09%(*objecttype)%09%(*objectname)"
        out = self._git("for-each-ref", "refs/tags", f"--format={fmt}")
        refs: list[TagRef] = []
        for line in out.splitlines():
            name, otype, oid, ptype, poid = (line.split("\t") + ["", "", "", "", ""])[:5]
            if otype == "commit":
                refs.append(TagRef(name, oid))
            elif otype == "tag" and ptype == "commit":
                refs.append(TagRef(name, poid))
        return refs

    def tags_merged_into_head(self) -> set[str]:
        """Names of the tags whose commit is HEAD or one of its ancestors."""
        return set(self._git("tag", "--list", "--merged", "HEAD").splitlines())

    def commits(self, rev_range: str) -> list[RawCommit]:
        """Commits in rev_range (e.g. "v1.2.0..HEAD" or "HEAD"), newest first."""
        out = self._git("log", f"--format=%H{_FIELD}%P{_FIELD}%B{_RECORD}", rev_range, "--", strip=False)
        commits: list[RawCommit] = []
        for rec in out.split(_RECORD):
            rec = rec.lstrip("\n")
            if not rec:
                continue
            sha, parents, message = rec.split(_FIELD, 2)
            commits.append(RawCommit(sha, tuple(parents.split()), message.strip()))
        return commits

    def count(self, rev_range: str) -> int:
        return int(self._git("rev-list", "--count", rev_range, "--"))

    def rev_exists(self, rev: str) -> str | None:
        """The commit SHA a revision names, or None."""
        try:
            return str(self.repo.git.execute(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                                             kill_after_timeout=TIMEOUT_S))
        except git.GitCommandError:
            return None

    def create_annotated_tag(self, name: str, message: str) -> None:
        """`git tag -a NAME -m MESSAGE` on HEAD; a missing committer identity is a clear one-line error."""
        try:
            self.repo.git.execute(["git", "tag", "--annotate", "--cleanup=verbatim", "-m", message, name],
                                  kill_after_timeout=TIMEOUT_S)
        except git.GitCommandError as exc:
            err = (exc.stderr or "").strip()
            if "tell me who you are" in err or "empty ident" in err:
                raise GitStateError("git has no committer identity to sign the annotated tag",
                                    'run: git config user.name "Your Name" && '
                                    'git config user.email you@example.org') from None
            raise GitStateError(f"git tag {name} failed: {err.splitlines()[-1] if err else exc}",
                                "check `git tag -l` and the repository state") from None

