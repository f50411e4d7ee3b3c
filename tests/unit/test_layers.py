"""The import layers docs/architecture.md draws are exactly the import-linter contract in pyproject.toml, and
every layer there is required: an optional one (`"(pipeline.x)"`) is skipped when its package is missing, so
a renamed package would silently leave the check."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _contract_layers() -> list[str]:
    [contract] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return list(contract["layers"])


def test_every_layer_is_required_and_exists() -> None:
    for layer in _contract_layers():
        assert not layer.startswith("("), f"{layer}: an optional layer; its package exists, so require it"
        for package in layer.split("|"):
            assert (ROOT / package.strip().replace(".", "/") / "__init__.py").is_file(), package


def test_the_architecture_doc_draws_the_contract_layers() -> None:
    doc = (ROOT / "docs/architecture.md").read_text()
    [line] = [ln for ln in doc.splitlines() if ln.startswith("tasks.py → ")]
    drawn = [" | ".join(f"pipeline.{p.strip()}" for p in layer.split("|")) for layer in line.split(" → ")[1:]]
    assert drawn == [re.sub(r"\s*\|\s*", " | ", layer) for layer in _contract_layers()]
