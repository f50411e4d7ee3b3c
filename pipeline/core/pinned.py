"""Hash pins of what the toolchain fetches outside pip's lock and apt, and of the tool binaries it runs.

The pins are in the repository (`toolchain.lock.json` at the root): `downloads` by file name (npm tarballs, the
layer zips inside them, the lint's schema wheel, the local cluster's Debian sources) and `binaries` by tool name
(helm, helm4, kubectl, trivy, hadolint, docker-compose; with the version each reports and where it comes from).
A file is checked when it is downloaded and every time a cache is used; a mismatch is one line naming the file,
the pinned and the found sha256 and the fix (delete the file, rerun). Hashing a 175 MB binary takes ~0.4 s, so a
verified hash is remembered by (path, mtime, size) in a small JSON memo beside the files (`HashMemo`): a rerun
stats the file instead of reading it.

Standard library only: the bootstrap imports this with the system Python, before the venv exists.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.core.errors import ToolMissing

# The pins belong to this code, not to the project it releases (VEZA_ROOT may name another tree): the lock beside
# the pipeline package.
LOCK_FILE = Path(__file__).resolve().parents[2] / "toolchain.lock.json"
MEMO_NAME = ".veza-verified.json"
BOOTSTRAP = "python3 -m pipeline.machine.bootstrap"


class PinMismatch(ToolMissing):
    """A downloaded or cached file, or a tool binary, is not the one its pin names (exit 6)."""


@dataclass(frozen=True)
class Pin:
    name: str      # file name (downloads) or tool name (binaries)
    sha256: str    # 64 lowercase hex digits
    source: str    # where the file comes from, for messages and `invoke doctor`
    version: str = ""   # binaries: what `<tool> --version` must report


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def _pin(section: str, name: str) -> Pin:
    entry = _load(str(LOCK_FILE)).get(section, {}).get(name)
    if not entry:
        raise PinMismatch(f"{name} has no sha256 pin in {LOCK_FILE} ({section})",
                          f"add its sha256 to {LOCK_FILE.name} after checking where it comes from")
    return Pin(name, entry["sha256"], entry.get("source", ""), entry.get("version", ""))


def download_pin(name: str) -> Pin:
    """The pin of a downloaded file, by its file name. PinMismatch when the lock has none."""
    return _pin("downloads", name)


def binary_pin(name: str) -> Pin:
    """The pin of a tool binary (helm, kubectl, trivy, …). PinMismatch when the lock has none."""
    return _pin("binaries", name)


def binary_names() -> list[str]:
    """Every pinned tool, in the lock's order."""
    return list(_load(str(LOCK_FILE)).get("binaries", {}))


def sha256_file(path: Path) -> str:
    """sha256 (hex) of a file's content, read in 1 MiB chunks. OSError when it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class HashMemo:
    """sha256 of files remembered by (resolved path, mtime_ns, ctime_ns, inode, size) in a JSON file; a changed
    file is re-read. The inode change time is in the key because a file's mtime can be set back (`touch -r`,
    `cp -p`, `rsync -t`) after a change, its ctime cannot: a byte changed under a restored mtime is read again.
    (The memo is a speed cache for the owner of the cache directory, not a defence against that owner.)

    Several processes may share one memo: each writes it whole with an atomic rename, and a lost update only
    costs a re-hash later. A memo that cannot be read or written is ignored (hashes are then computed each time).
    """

    def __init__(self, file: Path) -> None:
        self.file = file
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        try:
            loaded = json.loads(file.read_text())
            if isinstance(loaded, dict):
                self.entries = loaded
        except (OSError, ValueError):
            pass

    def sha256(self, path: Path) -> str:
        real = path.resolve()
        st = real.stat()
        key = str(real)
        seen = self.entries.get(key)
        stamp = [st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size]
        if isinstance(seen, list) and len(seen) == 5 and seen[:4] == stamp:
            return str(seen[4])
        digest = sha256_file(real)
        self.entries[key] = [*stamp, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
            tmp.replace(self.file)
            self.dirty = False
        except OSError:
            tmp.unlink(missing_ok=True)


def mismatch(path: Path, pin: Pin, found: str, rerun: str = BOOTSTRAP) -> PinMismatch:
    """The one-line refusal: the file, the pinned and the found sha256, and the fix."""
    return PinMismatch(f"{path}: sha256 {found} is not the pinned {pin.sha256} "
                       f"({pin.source}; {LOCK_FILE.name})",
                       f"delete it (rm {path}) and rerun {rerun}")


def check(path: Path, pin: Pin, *, memo: HashMemo | None = None, rerun: str = BOOTSTRAP) -> str:
    """Return the file's sha256 when it is the pinned one; else raise PinMismatch (one line, with the fix).

    With a memo, an unchanged file (same resolved path, mtime, ctime, inode and size) is not read again.
    """
    found = memo.sha256(path) if memo is not None else sha256_file(path)
    if memo is not None:
        memo.save()
    if found != pin.sha256:
        raise mismatch(path, pin, found, rerun)
    return found


def check_cached(path: Path, rerun: str = BOOTSTRAP) -> str:
    """check() of a cached download against the pin of its file name, with the memo of its directory."""
    return check(path, download_pin(path.name), memo=HashMemo(path.parent / MEMO_NAME), rerun=rerun)
