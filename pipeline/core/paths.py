"""Where things live: the project root, its state directory, tools, and caches outside the work tree."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("VEZA_ROOT", Path(__file__).resolve().parents[2]))
CONFIG_FILE = Path(os.environ.get("VEZA_CONFIG", ROOT / "pipeline.toml"))
STATE_DIR = ROOT / ".pipeline"
MANIFEST_FILE = STATE_DIR / "manifest.json"
RUNS_DIR = STATE_DIR / "runs"
VENV_DIR = ROOT / ".venv"
TOOLS_DIR = Path(os.environ.get("VEZA_TOOLS_DIR", ROOT / ".tools"))
TOOLS_BIN = TOOLS_DIR / "bin"
# Caches that must survive a fresh clone (CI clones anew every run): outside the work tree.
CACHE_DIR = Path(os.environ.get("VEZA_CACHE_DIR", "/var/cache/veza-pipeline"))


def tool_path(name: str) -> Path:
    """The project-local path of a tool binary (it may not exist yet)."""
    return TOOLS_BIN / name


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
