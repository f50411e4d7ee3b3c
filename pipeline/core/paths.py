"""Where things live: the project root, its state directory, tools, and caches outside the work tree."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("VEZA_ROOT", Path(__file__).resolve().parents[2]))
CONFIG_FILE = Path(os.environ.get("VEZA_CONFIG", ROOT / "pipeline.toml"))
# The state directory (manifests, runs, locks) is the config's: Config.state_dir ([project].state_dir,
# or VEZA_STATE_DIR), never a path of its own here.
VENV_DIR = ROOT / ".venv"
TOOLS_DIR = Path(os.environ.get("VEZA_TOOLS_DIR", ROOT / ".tools"))
TOOLS_BIN = TOOLS_DIR / "bin"
# Caches that must survive a fresh clone (CI clones anew every run): outside the work tree.
CACHE_DIR = Path(os.environ.get("VEZA_CACHE_DIR", "/var/cache/veza-pipeline"))


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
