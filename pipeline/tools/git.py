"""Git adapter: the few repository facts the versioning needs, each a `git` call with a timeout.

Everything else in pipeline/ reads git through this module, so the version logic stays plain Python
over typed values (RawCommit, TagRef) and the git plumbing has one home. It runs the git CLI itself (argv
lists, no shell): every fact is one plumbing command, and a no-op build does not pay for importing a
library that would run the same commands (GitPython took ~50 ms to import and started `git cat-file`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core.errors import GitStateError, ToolMissing

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


def _run_git(cwd: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess[bytes]:
    """`git ARGS` in cwd (no shell, TIMEOUT_S); raw bytes out. ToolMissing when git is not installed."""
    from pipeline.observe.tracing import tool_span

    argv = ("git", *args)
    with tool_span(argv) as (traceparent, span):
        env = {**os.environ, "TRACEPARENT": traceparent} if traceparent else None
        try:
            cp = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=TIMEOUT_S, check=False, env=env)
        except FileNotFoundError:
            raise ToolMissing("required tool 'git' not found in PATH",
                              "install git (Debian: apt-get install git)") from None
        except subprocess.TimeoutExpired:
            raise GitStateError(f"git {' '.join(args[:3])} timed out after {TIMEOUT_S}s in {cwd}",
                                "check the repository (a lock held by another git process?)") from None
        if span is not None:
            span.set_attribute("process.exit.code", cp.returncode)
    return cp


def _text(out: bytes, strip: bool) -> str:
    text = out.decode("utf-8", "surrogateescape")
    return text[:-1] if strip and text.endswith("\n") else text


class GitRepo:
    """One opened repository (`path` or a parent of it). Raises GitStateError (exit 2) for a missing
    repository, a bare one or one without commits."""

    def __init__(self, path: Path | str) -> None:
        start = Path(path)
        if not start.is_dir():
            raise GitStateError(f"not a git repository: {path}",
                                "run inside the project's clone (or `git init` and commit)")
        cp = _run_git(start, ("rev-parse", "--is-bare-repository", "--git-common-dir", "--show-toplevel"))
        err = cp.stderr.decode("utf-8", "replace")
        if cp.returncode != 0 and "not a git repository" in err:
            raise GitStateError(f"not a git repository: {path}",
                                "run inside the project's clone (or `git init` and commit)")
        lines = _text(cp.stdout, True).splitlines()
        if (lines and lines[0] == "true") or (cp.returncode != 0 and "work tree" in err):
            raise GitStateError(f"bare repository: {path}", "run inside a work tree")
        if cp.returncode != 0 or len(lines) < 3:
            raise GitStateError(f"git rev-parse failed in {path}: {err.strip()}",
                                "check the repository state with `git status`")
        self.root = Path(lines[2])
        self.common_dir = (start / lines[1]).resolve()
        head = _run_git(self.root, ("log", "-1", "--format=%H %ct", "HEAD", "--"))
        if head.returncode != 0:
            err = head.stderr.decode("utf-8", "replace").strip()
            if "does not have any commits" in err or "unknown revision" in err or "bad revision" in err:
                raise GitStateError(f"repository {self.root} has no commits yet", "commit something first")
            raise GitStateError(f"git log -1 failed in {self.root}: {err.replace(chr(10), ' | ')}",
                                "check the repository state with `git status`")
        sha, epoch = _text(head.stdout, True).split()
        self._head_sha, self._head_epoch = sha, int(epoch)

    def _git(self, *args: str, strip: bool = True) -> str:
        cp = _run_git(self.root, args)
        if cp.returncode != 0:
            err = cp.stderr.decode("utf-8", "replace").strip().replace("\n", " | ")
            raise GitStateError(f"git {' '.join(args[:3])} failed in {self.root}: {err}",
                                "check the repository state with `git status`")
        return _text(cp.stdout, strip)

    # ------------------------------------------------------------ HEAD
    def head_sha(self) -> str:
        return self._head_sha

    def head_time(self) -> str:
        """HEAD's commit time, UTC ISO 8601: a reproducible build timestamp (like SOURCE_DATE_EPOCH)."""
        return datetime.fromtimestamp(self._head_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def branch(self) -> str | None:
        """The checked-out branch, or None when HEAD is detached."""
        cp = _run_git(self.root, ("symbolic-ref", "-q", "HEAD"))
        ref = _text(cp.stdout, True)
        if cp.returncode != 0 or not ref.startswith("refs/heads/"):
            return None
        return ref.removeprefix("refs/heads/")

    def is_shallow(self) -> bool:
        # what `git rev-parse --is-shallow-repository` checks, without a process
        return (self.common_dir / "shallow").is_file()

    def shallow_boundary(self) -> set[str]:
        """SHAs of the commits whose parents a shallow clone did not fetch (`.git/shallow`; empty if full)."""
        path = self.common_dir / "shallow"
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
                 .encode("utf-8", "surrogateescape"))   # the exact bytes git wrote
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
        cp = _run_git(self.root, ("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"))
        return _text(cp.stdout, True) if cp.returncode == 0 else None

    def create_annotated_tag(self, name: str, message: str) -> None:
        """`git tag -a NAME -m MESSAGE` on HEAD; a missing committer identity is a clear one-line error."""
        cp = _run_git(self.root, ("tag", "--annotate", "--cleanup=verbatim", "-m", message, name))
        if cp.returncode == 0:
            return
        err = cp.stderr.decode("utf-8", "replace").strip()
        if "tell me who you are" in err or "empty ident" in err:
            raise GitStateError("git has no committer identity to sign the annotated tag",
                                'run: git config user.name "Your Name" && '
                                'git config user.email you@example.org')
        raise GitStateError(f"git tag {name} failed: {err.splitlines()[-1] if err else f'exit {cp.returncode}'}",
                            "check `git tag -l` and the repository state")
