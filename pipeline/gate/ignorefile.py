"""The scan gate's ignore file: Trivy's `.trivyignore.yaml`, field for field, plus the pipeline's rules.

Source of every meaning below: Trivy's `pkg/result/ignore.go` (IgnoreFinding, IgnoreConfig, Match*) and
`pkg/result/filter.go`, `pkg/purl` (PackageURL.Match), and the "Filtering" page of Trivy's docs.

A file whose name does not end in .yml/.yaml is Trivy's plain `.trivyignore` (parse_plain_ignore_file).
Two YAML spellings are read, mixed freely in one file:

    vulnerabilities:                 # Trivy's own layout: one list per finding class
      - id: CVE-2023-3446
        statement: not reachable       # why (the pipeline requires it: no statement → the entry is a finding)
        expired_at: 2026-12-31         # the pipeline requires it too (no expiry → a finding)
        paths: ["usr/lib/**"]
        purls: ["pkg:deb/debian/libssl3"]
    misconfigurations: [...]         # also secrets: [...], licenses: [...]
    ignores:                         # the pipeline's older layout: one list for every class
      - {id: CVE-2099-0001, reason: ..., expires: 2026-12-31, packages: [bash]}

Fields (each exactly as Trivy means it):
- `id`: vulnerabilities match `VulnerabilityID` exactly; secrets the rule ID; licenses the license name;
  misconfigurations match the check ID **or any of its aliases** (Trivy applies check aliases:
  `AVD-DS-0002`, `DS002` and `DS-0002` are one check; case-sensitive, as Trivy 0.76 does).
  Entries under `ignores:` apply to every class (as Trivy treats the IDs of a plain `.trivyignore`).
- `paths`: doublestar globs (`*` stays inside one path segment, `**` spans segments, `{a,b}`, `[a-z]`;
  no leading-slash normalisation). Vulnerabilities: matched against the result target and the package path;
  misconfigurations and secrets: the result target; licenses: the file path. No paths = everywhere.
- `purls`: vulnerabilities only. An entry purl matches the finding's package purl when type, namespace and
  name are equal, its version (if set) and subpath (if set) are equal, and each of its qualifiers is on the
  finding with the same value. A finding without a purl is not excluded by `purls` (Trivy's matchPURL).
- `expired_at` (`expires`): the entry stops applying at that instant; a bare date is 00:00 UTC that day, so
  on the day itself the entry no longer applies (`ExpiredAt.Before(now)`). Trivy drops expired entries
  silently; the pipeline also reports each one as a blocking finding (IGNORE-EXPIRED).
- `statement` (`reason`): why the risk is accepted.
- `packages` (the pipeline's own, `ignores:` layout): package names (`PkgName`) the entry is limited to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from packageurl import PackageURL
from wcmatch import glob as wcglob

from pipeline.core.errors import UsageError
from pipeline.core.yamlfile import DatelessLoader, parse_when

if TYPE_CHECKING:
    from pipeline.gate.policy import Finding


class IgnoreFileError(UsageError):
    """An ignore file that cannot be read at all (bad YAML, an entry without id, a bad date) (exit 2)."""


# Trivy's section → the finding kinds it applies to; "ignores" is every kind.
SECTIONS = {"vulnerabilities": ("vulnerability",), "misconfigurations": ("misconfig",), "secrets": ("secret",),
            "licenses": ("license",), "ignores": ()}
_KEYS = {"id", "statement", "reason", "expired_at", "expires", "paths", "purls", "packages"}
# doublestar.Match: '*' never crosses '/', '**' spans segments, braces and classes; dot files are not special.
_GLOB = wcglob.GLOBSTAR | wcglob.BRACE | wcglob.DOTGLOB
_CHECK_ID = re.compile(r"(?:AVD-)?([A-Z]+)-?0*(\d+)")


def check_key(ident: str) -> str:
    """The alias-free key of a misconfiguration check ID: AVD-DS-0002, DS002 and DS-0002 → 'DS-2'.

    Trivy's built-in checks carry their deprecated AVD ID (`AVD-DS-0002`) and legacy ID (`DS002`) as aliases
    of the ID (`DS-0002`), and the forms follow this pattern for every built-in check. Matching is case
    sensitive, as in Trivy 0.76 (checked: `ds-0002` ignores nothing there). Other shapes compare as they are.
    """
    text = ident.strip()
    m = _CHECK_ID.fullmatch(text)
    return f"{m.group(1)}-{int(m.group(2))}" if m else text


def path_matches(path: str, pattern: str) -> bool:
    """doublestar.Match(pattern, path) as Trivy calls it: `*` within a segment, `**` across segments (a
    trailing `/**` also matches the directory itself), `{a,b}`, `[...]`; paths compared as written."""
    if wcglob.globmatch(path, pattern, flags=_GLOB):
        return True
    return pattern.endswith("/**") and wcglob.globmatch(path, pattern[:-3], flags=_GLOB)


def valid_pattern(pattern: str) -> bool:
    """doublestar.ValidatePattern (Trivy refuses the ignore file otherwise): every '[' and '{' is closed,
    braces nest, and the pattern does not end in a lone escape."""
    depth, i, n = 0, 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                return False
            i += 2
            continue
        if ch == "[":
            close = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            if close < 0:
                return False
            i = close + 1
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return False
            depth -= 1
        i += 1
    return depth == 0


def purl_matches(constraint: PackageURL, target: PackageURL) -> bool:
    """Trivy's PackageURL.Match: `constraint` (from the ignore file) satisfied by the finding's purl."""
    if (constraint.type, constraint.namespace, constraint.name) != (target.type, target.namespace, target.name):
        return False
    if constraint.version and constraint.version != target.version:
        return False
    if constraint.subpath and constraint.subpath != target.subpath:
        return False
    have = _qualifiers(target)
    return all(have.get(k) == v for k, v in _qualifiers(constraint).items())


def _qualifiers(p: PackageURL) -> dict[str, str]:
    q = p.qualifiers
    return dict(q) if isinstance(q, dict) else {}


@dataclass(frozen=True)
class IgnoreEntry:
    id: str
    reason: str
    expires: datetime | None
    packages: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    line: int = 0
    kinds: tuple[str, ...] = ()          # finding kinds the entry applies to; () = every kind
    purls: tuple[PackageURL, ...] = ()

    def matches(self, f: Finding) -> bool:
        """Does this entry suppress finding f (Trivy's IgnoreConfig.Match* for f's class)?"""
        if self.kinds and f.kind not in self.kinds:
            return False
        if f.kind == "misconfig":
            key = check_key(self.id)
            if all(check_key(i) != key for i in (f.id, *f.aliases)):
                return False
        elif self.id != f.id:
            return False
        if self.packages and f.package not in self.packages:
            return False
        if self.paths:
            where = [f.target, f.path] if f.kind == "vulnerability" else [f.path or f.target]
            if not any(path_matches(w, p) for w in where if w for p in self.paths):
                return False
        if self.purls and f.kind == "vulnerability" and f.purl:
            try:
                target = PackageURL.from_string(f.purl)
            except ValueError:
                return False
            if not any(purl_matches(c, target) for c in self.purls):
                return False
        return True

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires < now


@dataclass(frozen=True)
class IgnoreFile:
    path: str
    entries: tuple[IgnoreEntry, ...]


def load_ignore_file(path: Path | None) -> IgnoreFile:
    """Read the ignore file; None is an empty one, a missing named file is an error."""
    if path is None:
        return IgnoreFile("", ())
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise IgnoreFileError(f"ignore file not found: {path}",
                              "create it (YAML: vulnerabilities: [{id, statement, expired_at}])"
                              " or drop --ignore-file") from None
    if path.suffix not in (".yml", ".yaml"):   # Trivy picks the format by the extension too
        return parse_plain_ignore_file(text, str(path))
    return parse_ignore_file(text, str(path))


def parse_plain_ignore_file(text: str, source: str = ".trivyignore") -> IgnoreFile:
    """Trivy's plain `.trivyignore`, read as Trivy reads it (pkg/result/ignore.go parseIgnore and
    getExpirationDate): each line is trimmed; an empty line or one *starting* with `#` is skipped; the line
    is split on whitespace, the first field is the ID (verbatim: `CVE-1#note` is the ID `CVE-1#note`, and
    IDs compare case-sensitively), and the first field anywhere on the line that starts with `exp:` is the
    expiry (00:00 UTC that day) — also after a `#`, since Trivy has no end-of-line comments. Each ID applies
    to every finding class.

    The pipeline's additions: the text after the first whitespace-separated `#` is the entry's statement
    (the pipeline requires one; Trivy reads none from this format), and an impossible date is a one-line
    error (exit 2) where Trivy warns and drops the line.
    """
    entries: list[IgnoreEntry] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        expires = None
        value = next((f.removeprefix("exp:") for f in fields if f.startswith("exp:")), None)
        if value is not None:
            try:   # Trivy: time.Parse("2006-01-02", …), a bare date only
                expires = parse_when(value) if len(value) == 10 else None
            except ValueError:
                expires = None
            if expires is None:
                raise IgnoreFileError(f"{source}: entry {len(entries) + 1} (line {n}): exp '{value}' is not a date",
                                      "write a real calendar date as exp:YYYY-MM-DD, e.g. exp:2026-02-28")
        hashes = [i for i, f in enumerate(fields) if i > 0 and f.startswith("#")]
        reason = ""
        if hashes:
            words = [f for f in fields[hashes[0]:] if not f.startswith("exp:")]
            reason = " ".join(words)[1:].strip()
        entries.append(IgnoreEntry(id=fields[0], reason=reason, expires=expires, line=n))
    return IgnoreFile(source, tuple(entries))


def parse_ignore_file(text: str, source: str = "ignore file") -> IgnoreFile:
    """Parse the YAML text (both layouts above). IgnoreFileError (exit 2) with the entry and line."""
    loader = DatelessLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise IgnoreFileError(f"{source}: invalid YAML: {first}", "fix the YAML syntax") from None
    finally:
        loader.dispose()
    if root is None:
        return IgnoreFile(source, ())
    lists: list[tuple[str, yaml.Node]] = []
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if k.value not in SECTIONS:
                raise IgnoreFileError(f"{source}: unknown top-level key(s): {k.value} (line {k.start_mark.line + 1})",
                                      f"use {', '.join(SECTIONS)}")
            lists.append((k.value, v))
    else:
        lists.append(("ignores", root))
    entries: list[IgnoreEntry] = []
    n = 0
    for section, node in lists:
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            continue
        if not isinstance(node, yaml.SequenceNode):
            raise IgnoreFileError(f"{source}: expected a list of entries under '{section}:'",
                                  f"write: {section}: [{{id: ..., statement: ..., expired_at: YYYY-MM-DD}}]")
        for item in node.value:
            n += 1
            entries.append(_entry(item, section, f"{source}: entry {n}", source))
    return IgnoreFile(source, tuple(entries))


def _entry(node: yaml.Node, section: str, where: str, source: str) -> IgnoreEntry:
    line = node.start_mark.line + 1
    if not isinstance(node, yaml.MappingNode):
        raise IgnoreFileError(f"{where} (line {line}): not a mapping",
                              "write each entry as {id: ..., statement: ..., expired_at: ...}")
    fields: dict[str, tuple[Any, int]] = {}
    for k, v in node.value:
        fields[str(k.value)] = (_construct(v), v.start_mark.line + 1)
    unknown = set(fields) - _KEYS
    if unknown:
        raise IgnoreFileError(f"{where} (line {line}): unknown key(s) {', '.join(sorted(unknown))}",
                              f"allowed keys: {', '.join(sorted(_KEYS))}")
    for a, b in (("statement", "reason"), ("expired_at", "expires")):
        if a in fields and b in fields:
            raise IgnoreFileError(f"{where} (line {line}): both '{a}' and '{b}'", f"keep one of them ('{a}')")
    ident = str(fields.get("id", (None, 0))[0] or "").strip()
    if not ident:
        raise IgnoreFileError(f"{where} (line {line}): missing 'id'",
                              "give the vulnerability, secret rule, check or license ID")
    reason = fields.get("statement") or fields.get("reason") or (None, 0)
    return IgnoreEntry(
        id=ident, reason=str(reason[0] or "").strip(), expires=_expiry(fields, where),
        packages=_strs(fields, "packages", where), paths=_paths(fields, where),
        line=line, kinds=SECTIONS[section], purls=_purls(fields, section, where),
    )


def _construct(node: yaml.Node) -> Any:
    loader = DatelessLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _expiry(fields: dict[str, tuple[Any, int]], where: str) -> datetime | None:
    key = "expired_at" if "expired_at" in fields else "expires"
    value, line = fields.get(key, (None, 0))
    if value is None or value == "":
        return None
    try:
        return parse_when(value)
    except ValueError:
        raise IgnoreFileError(f"{where} (line {line}): {key} '{value}' is not a date",
                              "write a real calendar date as YYYY-MM-DD, e.g. 2026-02-28") from None


def _strs(fields: dict[str, tuple[Any, int]], key: str, where: str) -> tuple[str, ...]:
    value, line = fields.get(key, (None, 0))
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise IgnoreFileError(f"{where} (line {line}): {key} must be a list of strings", f"write {key}: [\"...\"]")


def _paths(fields: dict[str, tuple[Any, int]], where: str) -> tuple[str, ...]:
    paths = _strs(fields, "paths", where)
    for p in paths:
        if not valid_pattern(p):
            raise IgnoreFileError(f"{where} (line {fields['paths'][1]}): invalid path pattern '{p}'",
                                  "write a glob such as usr/lib/** or app/*.json") from None
    return paths


def _purls(fields: dict[str, tuple[Any, int]], section: str, where: str) -> tuple[PackageURL, ...]:
    texts = _strs(fields, "purls", where)
    if texts and section not in ("vulnerabilities", "ignores"):
        raise IgnoreFileError(f"{where} (line {fields['purls'][1]}): purls apply to vulnerabilities only",
                              "move the entry under vulnerabilities:, or use paths")
    out = []
    for t in texts:
        try:
            out.append(PackageURL.from_string(t))
        except ValueError as exc:
            raise IgnoreFileError(f"{where} (line {fields['purls'][1]}): purl '{t}' is invalid ({exc})",
                                  "write a package URL such as pkg:deb/debian/openssl") from None
    return tuple(out)
