"""The one rich console of the pipeline (stderr stays for errors); every printed line is redacted."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.core.redact import redact


class _RedactingConsole(Console):
    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(redact(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = _RedactingConsole(highlight=False, soft_wrap=False, width=None)


def table(title: str, *columns: str) -> Table:
    t = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t

if not console.is_terminal:
    console.width = 160  # CI logs: wide enough that tables do not fold every cell
