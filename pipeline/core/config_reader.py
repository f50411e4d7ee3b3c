"""The strict TOML reader behind pipeline.toml: every key checked, every error one line with the path
(`pipeline.toml: environments.dev.stages: 'test' is not allowed (fix: …)`), unknown keys refused."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipeline.core.errors import ConfigError
from pipeline.core.platforms import Platform, PlatformError, parse_platforms

T = TypeVar("T")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


class Table:
    """A TOML table being read: typed getters that name the file and the dotted key on error."""

    def __init__(self, file: Path, where: str, data: Any) -> None:
        self.file = file
        self.where = where
        if not isinstance(data, dict):
            self.fail(where, f"must be a table, got {type_name(data)}", f"write [{where}] as a table")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def fail(self, key: str, problem: str, fix: str) -> None:
        raise ConfigError(f"{self.file.name}: {key}: {problem}", fix)

    def key(self, name: str) -> str:
        """The dotted path of `name` as TOML writes it: a key that is not bare (empty, unicode, spaces) is
        quoted, so `environments."dév"` and `environments.""` say which table is meant."""
        shown = name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)
        return f"{self.where}.{shown}" if self.where else shown

    def _get(self, name: str, kind: type[T], kind_name: str, default: Any, required: bool) -> T:
        self.used.add(name)
        if name not in self.data:
            if required:
                near = difflib.get_close_matches(name, [str(k) for k in self.data], n=1, cutoff=0.6)
                if near:
                    self.fail(self.key(name), f"missing (found '{near[0]}': a typo?)",
                              f"rename {near[0]} to {name}")
                self.fail(self.key(name), "missing", f"add {name} = <{kind_name}> under [{self.where}]")
            return default  # type: ignore[no-any-return]
        value = self.data[name]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            self.fail(self.key(name), f"expected {kind_name}, got {type_name(value)} {value!r}",
                      f"set {name} to {_article(kind_name)} {kind_name}")
        return value  # type: ignore[no-any-return]

    def text(self, name: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> str:
        v = self._get(name, str, "string", default, default is None)
        if choices and v not in choices:
            self.fail(self.key(name), f"'{v}' is not allowed", f"use one of: {', '.join(choices)}")
        return v

    def integer(self, name: str, default: int | None = None, *, lo: int = 0, hi: int = 2**31) -> int:
        v = self._get(name, int, "integer", default, default is None)
        if not lo <= v <= hi:
            self.fail(self.key(name), f"{v} is out of range", f"use an integer between {lo} and {hi}")
        return v

    def number(self, name: str, default: float | None = None) -> float:
        v = self._get(name, float, "number", default, default is None)
        if v < 0:
            self.fail(self.key(name), f"{v} is negative", "use a number >= 0")
        return v

    def flag(self, name: str, default: bool | None = None) -> bool:
        return self._get(name, bool, "boolean (true/false)", default, default is None)

    def texts(self, name: str, default: tuple[str, ...] | None = None, *,
             choices: tuple[str, ...] = ()) -> tuple[str, ...]:
        v = self._get(name, list, "list of strings", None if default is None else list(default),
                      default is None)
        for item in v:
            if not isinstance(item, str):
                self.fail(self.key(name), f"expected list of strings, found {type_name(item)} {item!r}",
                          f'quote every item of {name}, e.g. ["a", "b"]')
            if choices and item not in choices:
                near = difflib.get_close_matches(item, choices, n=1, cutoff=0.6)
                self.fail(self.key(name), f"'{item}' is not allowed",
                          (f"did you mean '{near[0]}'? " if near else "") + f"use items from: {', '.join(choices)}")
        if (twice := next((item for i, item in enumerate(v) if item in v[:i]), None)) is not None:
            self.fail(self.key(name), f"'{twice}' is listed twice", f"list each item of {name} once")
        return tuple(v)

    def table(self, name: str, required: bool = True) -> Table:
        self.used.add(name)
        if name not in self.data:
            if required:
                self.fail(self.key(name), "missing table", f"add a [{self.key(name)}] table")
            return Table(self.file, self.key(name), {})
        return Table(self.file, self.key(name), self.data[name])

    def done(self) -> None:
        """Refuse keys nobody read: a typo must not be silently ignored."""
        for k in self.data:
            if k not in self.used:
                allowed = ", ".join(sorted(self.used))
                near = difflib.get_close_matches(k, sorted(self.used), n=1, cutoff=0.6)
                fix = f"did you mean '{near[0]}'? (allowed: {allowed})" if near \
                    else f"remove it or use one of: {allowed}"
                self.fail(self.key(k), "unknown key", fix)


def type_name(v: Any) -> str:
    return {str: "string", int: "integer", float: "number", bool: "boolean", list: "list",
            dict: "table"}.get(type(v), type(v).__name__)


def check_name(t: Table, key: str, value: str) -> None:
    """A pipeline name (service, environment): lowercase letters, digits and '-', not starting with '-'.
    ConfigError naming `key`, with a corrected name when one can be derived (pipeline.core.names)."""
    if not value or not set(value) <= NAME_CHARS or value[0] == "-":
        from pipeline.core.names import suggest_label

        better = suggest_label(value)
        t.fail(key, f"'{value}' is not a valid name",
               f"use '{better}'" if better else "use lowercase letters, digits and '-'")


def escapes_root(root: Path, rel: str) -> bool:
    """True when the configured path `rel` (relative to root) names a place outside root: an absolute path
    or '..' components that climb above it (decided on the text, so a symlink the project keeps inside its
    tree on purpose is not refused)."""
    full = os.path.normpath(os.path.join(root, rel))
    base = os.path.normpath(root)
    return full != base and not full.startswith(base.rstrip(os.sep) + os.sep)


def inside_root(t: Table, root: Path, name: str, rel: str) -> Path:
    """root/rel, or a ConfigError (exit 2) naming the key when rel escapes the project root."""
    if escapes_root(root, rel):
        t.fail(t.key(name), f"'{rel}' is outside the project directory {root}",
               f"write {name} as a path inside the project (relative to {root.name}/ and without '..' above it)")
    return root / rel


def path_in(t: Table, root: Path, name: str, *, must_exist: bool, is_dir: bool, inside: bool = True) -> Path:
    """root/<the text of key `name`>, resolved; ConfigError (exit 2) naming the key when it must exist and does
    not, or, with `inside`, when it leaves the project root. Build inputs (context, dockerfile) must be inside:
    the input digest and the skip-unchanged decision cover the project's files. Files read as they are (Helm
    values, the ignore file, the DB seed) may be anywhere: an absolute path there is the user's choice."""
    rel = t.text(name)
    p = (inside_root(t, root, name, rel) if inside else root / rel).resolve()
    if must_exist and not (p.is_dir() if is_dir else p.is_file()):
        kind = "directory" if is_dir else "file"
        t.fail(t.key(name), f"{kind} '{rel}' does not exist", f"create it or point {name} at an existing {kind}")
    return p


def platforms_in(t: Table, name: str = "platforms") -> tuple[Platform, ...]:
    """An optional list of OCI platforms (`os/arch[/variant]`, pipeline.core.platforms); () when absent.
    ConfigError naming the file and key for a malformed, unknown, empty or repeated platform."""
    if name not in t.data:
        t.used.add(name)
        return ()
    texts = t.texts(name)
    try:
        return parse_platforms(texts)
    except PlatformError as exc:
        t.fail(t.key(name), str(exc), exc.fix)
        raise  # unreachable: fail() raises


def items_of(t: Table, name: str, read: Callable[[Table], T], required: bool = True) -> list[T]:
    """An array of tables, each read strictly."""
    t.used.add(name)
    raw = t.data.get(name)
    if raw is None:
        if required:
            t.fail(t.key(name), "missing", f"add at least one [[{name}]] table")
        return []
    if not isinstance(raw, list):
        t.fail(t.key(name), f"expected an array of tables, got {type_name(raw)}", f"write [[{name}]] blocks")
    return [read(Table(t.file, f"{t.key(name)}[{i}]", item)) for i, item in enumerate(raw)]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
