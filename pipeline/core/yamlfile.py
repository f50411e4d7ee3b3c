"""YAML for the pipeline's inputs: dates stay text until the field that wants one parses it.

PyYAML's SafeLoader turns any scalar shaped like `2026-02-30` into a `datetime.date` while loading, and an
impossible date raises ValueError from inside the loader: a traceback instead of a message naming the file,
the entry and the line. `DatelessLoader` resolves no implicit timestamps (they stay strings, as Helm and
Kubernetes see them after their YAML→JSON conversion) and `parse_when` turns the fields that are dates into
one, with a one-line error when it is not a calendar date.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from typing import Any

import yaml

from pipeline.core.errors import UsageError

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_DATE_START = re.compile(r"\d{4}-\d{2}-\d{2}(?:$|[Tt ])")


class DatelessLoader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps; an explicit `!!timestamp` value is kept as its text too."""


DatelessLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None


DatelessLoader.add_constructor(_TIMESTAMP, _timestamp_as_text)


def load_text(text: str, source: str, error: type[UsageError] = UsageError) -> Any:
    """One YAML document (dates as strings). Bad YAML → `error` (exit 2) naming source and the first line."""
    try:
        return yaml.load(text, Loader=DatelessLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{source}: invalid YAML: {first}", "fix the YAML syntax at that line") from None


def parse_when(value: Any) -> datetime:
    """A YAML date or timestamp → an aware UTC datetime (a bare date is 00:00 UTC that day).

    Accepts what YAML 1.1's timestamp type and Go's yaml.v3 (Trivy's parser) accept: `YYYY-MM-DD`,
    `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` and the space-separated form. Raises ValueError otherwise,
    including impossible calendar dates (2026-02-30, 2026-13-01).
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0, 0), tzinfo=UTC)
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    text = value.strip()
    if not _DATE_START.match(text):
        raise ValueError(f"not a date: {text!r}")
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), time(0, 0), tzinfo=UTC)
    parsed = datetime.fromisoformat(text.replace(" ", "T", 1) if text[10:11] == " " else text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
