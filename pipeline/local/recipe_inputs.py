"""Inputs a base recipe fetches on the host before its image build: wheels pinned by hash (`wheels.txt`).

Containers on these machines reach Debian's mirror over plain HTTP, but not every package index a host
reaches (a TLS-intercepting proxy, a local mirror configured in the host's pip.conf). A recipe that needs a
wheel lists it, pinned by `--hash`, in `wheels.txt`; `invoke bases` downloads it on the host with pip (cached
under CACHE_DIR/bases/wheels/<hash of wheels.txt>/) and builds from a copy of the recipe directory with the
wheels in `wheels/`. The Dockerfile installs them with `pip install --no-index --require-hashes`: the build
itself is offline, and every byte is checked against the pinned hash twice.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core.paths import CACHE_DIR, ensure_dir

WHEELS_FILE = "wheels.txt"


@contextmanager
def build_context(directory: Path) -> Iterator[Path]:
    """The directory to build a recipe from: itself, or a temporary copy with `wheels/` when it has wheels.txt."""
    req = directory / WHEELS_FILE
    if not req.is_file():
        yield directory
        return
    from pipeline.tools import pip

    cache = ensure_dir(CACHE_DIR / "bases" / "wheels" / hashlib.sha256(req.read_bytes()).hexdigest()[:16])
    if not any(cache.glob("*.whl")):
        pip.download_requirements(req, cache)
    with tempfile.TemporaryDirectory(prefix="veza-recipe-") as tmp:
        ctx = Path(tmp) / directory.name
        shutil.copytree(directory, ctx)
        shutil.copytree(cache, ctx / "wheels")
        yield ctx
