"""The build context exactly as the engine receives it: `.dockerignore` semantics of the sender that runs.

The files of a build context are chosen on the client side, before the engine sees anything: BuildKit's
file sync (tonistiigi/fsutil, walking with moby's pattern matcher) for buildx and for a BuildKit-capable
docker CLI, the CLI's tar writer for the legacy builder. The three differ in two corners, and the input
digest must follow whichever one sends the context:

- *parent matching*: moby's matcher before 2021 tested a pattern against the parent directory cut to the
  pattern's own depth (`**/tmp` does not match `a/b/tmp/x` through its parent); later ones test every parent;
- *descending into an excluded directory*: older walkers (fsutil before 2022, and the tar writer to this day)
  enter an excluded directory only when an exception pattern starts with that directory's path
  (`*` + `!**/*.go` leaves `internal/api/handler.go` out); fsutil since January 2022 (BuildKit >= 0.10, buildx)
  enters it whenever an exception has a wildcard.

Pattern syntax (moby/patternmatcher, the reference for all three): one pattern a line, `#` comments, blank
lines skipped; surrounding spaces trimmed; `!` makes an exception; each pattern is cleaned like Go's
`filepath.Clean` and a leading `/` is dropped; `*` is any run of non-`/` characters, `?` one such
character, `**` any number of directories (`**` at the end: everything), `\\` escapes the next character,
`[...]` is a character class; the last matching pattern wins. BuildKit reads `<Dockerfile>.dockerignore`
beside the Dockerfile in preference to the context's `.dockerignore`; the legacy builder reads only the latter.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UsageError

_WILDCARDS = "*[]?^\\"


@dataclass(frozen=True)
class ContextRules:
    """How one context sender applies an ignore file (see the module docstring for the three senders).

    any_parent: test patterns against every parent directory (else: the parent cut to the pattern's depth).
    descend_for_wildcard_exceptions: enter an excluded directory when an exception pattern has a wildcard.
    dockerfile_ignore: `<Dockerfile>.dockerignore` beside the Dockerfile takes precedence.
    """

    name: str
    any_parent: bool
    descend_for_wildcard_exceptions: bool
    dockerfile_ignore: bool


# docker CLI 20.10 with DOCKER_BUILDKIT=1 (fsutil and moby fileutils of 2020, vendored in the CLI).
BUILDKIT_CLASSIC = ContextRules("BuildKit file sync (docker CLI 20.10)", False, False, True)
# buildx, any release since 2022 (fsutil with the newer patternmatcher).
BUILDKIT_CURRENT = ContextRules("BuildKit file sync (buildx)", True, True, True)
# The legacy builder: the CLI's own tar of the context (moby pkg/archive).
LEGACY_TAR = ContextRules("legacy builder context tar", True, False, False)


def rules_for(builder_kind: str) -> ContextRules:
    """The context rules of a builder kind (pipeline.tools.buildkit.KINDS: buildx | buildkit | legacy)."""
    return {"buildx": BUILDKIT_CURRENT, "buildkit": BUILDKIT_CLASSIC, "legacy": LEGACY_TAR}[builder_kind]


@dataclass(frozen=True)
class Pattern:
    """One cleaned ignore pattern: its text (without `!`), whether it is an exception, and its regex."""

    text: str
    exclusion: bool
    regex: re.Pattern[str]

    @property
    def depth(self) -> int:
        return len(self.text.split("/"))

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


def read_ignore_file(text: str) -> list[str]:
    """The patterns of a `.dockerignore` text, cleaned as the docker CLI and BuildKit read them.

    Returns e.g. ["*", "!go.mod", "!**/*.go"]; exception patterns keep their leading `!`.
    """
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = posixpath.normpath(line)
            if line.startswith("//"):   # Go's Clean collapses a leading "//"; posixpath keeps it
                line = "/" + line.lstrip("/")
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        out.append(("!" if invert else "") + line)
    return out


def compile_pattern(pattern: str) -> Pattern:
    """Translate one ignore pattern to a regular expression (moby/patternmatcher's translation).

    Raises UsageError for an empty exception (`!`) or a malformed character class.
    """
    exclusion = pattern.startswith("!")
    text = pattern[1:] if exclusion else pattern
    if exclusion and not text:
        raise UsageError("illegal exclusion pattern '!' in a .dockerignore file",
                         "write the path to re-include after the '!'")
    text = posixpath.normpath(text) if text else "."
    out = ["^"]
    i = 0
    while i < len(text):
        ch = text[i]
        i += 1
        if ch == "*":
            if i < len(text) and text[i] == "*":
                i += 1
                if i < len(text) and text[i] == "/":
                    i += 1
                out.append(".*" if i >= len(text) else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in ".$":
            out.append("\\" + ch)
        elif ch == "\\":
            if i < len(text):
                out.append(re.escape(text[i]))
                i += 1
            else:
                out.append("\\\\")
        else:
            out.append(ch)
    out.append("$")
    try:
        regex = re.compile("".join(out), re.DOTALL)
    except re.error as exc:
        raise UsageError(f"bad .dockerignore pattern {pattern!r}: {exc}", "fix the pattern (Go filepath.Match syntax)",
                         ) from None
    return Pattern(text, exclusion, regex)


class IgnoreMatcher:
    """Ordered patterns; a path is excluded when the last pattern matching it (or a parent) is not an exception."""

    def __init__(self, patterns: list[str], rules: ContextRules) -> None:
        self.patterns = [compile_pattern(p) for p in patterns if p.strip()]
        self.rules = rules
        self.has_exceptions = any(p.exclusion for p in self.patterns)
        self.wildcard_exceptions = any(
            p.exclusion and any(c in _strip_trailing_glob(p.text) for c in _WILDCARDS) for p in self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether a context-relative path (`/`-separated) is excluded."""
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for p in self.patterns:
            if self.rules.any_parent and p.exclusion != matched:
                continue   # the newer matcher skips patterns that cannot change the verdict
            hit = p.matches(path)
            if not hit and parents:
                if self.rules.any_parent:
                    hit = any(p.matches("/".join(parents[:n])) for n in range(1, len(parents) + 1))
                elif p.depth <= len(parents):
                    hit = p.matches("/".join(parents[:p.depth]))
            if hit:
                matched = not p.exclusion
        return matched

    def enters_excluded_dir(self, path: str) -> bool:
        """Whether the walker still descends into an excluded directory (to find re-included files)."""
        if not self.has_exceptions:
            return False
        if self.rules.descend_for_wildcard_exceptions and self.wildcard_exceptions:
            return True
        prefix = path + "/"
        strip = _strip_trailing_glob if self.rules.descend_for_wildcard_exceptions else (lambda t: t)
        return any(p.exclusion and (strip(p.text) + "/").startswith(prefix) for p in self.patterns)


def _strip_trailing_glob(text: str) -> str:
    """fsutil's patternWithoutTrailingGlob: one trailing `/**`, then one trailing `/*`, removed."""
    text = text.removesuffix("/**")
    return text.removesuffix("/*")


def ignore_file(context: Path, dockerfile: Path, rules: ContextRules) -> Path | None:
    """The ignore file the sender reads: `<Dockerfile>.dockerignore` (BuildKit) before `<context>/.dockerignore`."""
    if rules.dockerfile_ignore:
        specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
        if specific.is_file():
            return specific
    general = context / ".dockerignore"
    return general if general.is_file() else None


def context_files(context: Path, dockerfile: Path, rules: ContextRules) -> list[str]:
    """The files (and symlinks) the engine receives from `context`, sorted, as `/`-separated relative paths.

    Directories are walked in the sender's order; an excluded directory is pruned unless the sender would
    descend into it (ContextRules). Raises UsageError for a malformed ignore file.
    """
    found = ignore_file(context, dockerfile, rules)
    matcher = IgnoreMatcher(read_ignore_file(found.read_text()) if found else [], rules)
    files: list[str] = []
    for top, dirs, names in os.walk(context, followlinks=False):
        rel_top = os.path.relpath(top, context)
        rel_top = "" if rel_top == "." else rel_top.replace(os.sep, "/")
        kept = []
        for d in sorted(dirs):
            rel = f"{rel_top}/{d}" if rel_top else d
            if os.path.islink(os.path.join(top, d)):
                if not matcher.excluded(rel):
                    files.append(rel)
            elif not matcher.excluded(rel) or matcher.enters_excluded_dir(rel):
                kept.append(d)
        dirs[:] = kept
        for n in names:
            rel = f"{rel_top}/{n}" if rel_top else n
            if not matcher.excluded(rel):
                files.append(rel)
    return sorted(files)
