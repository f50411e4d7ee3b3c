"""debootstrap and tar adapter: a Debian root filesystem as a tarball `docker import` can read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.tools import proc

# Package caches debootstrap leaves behind: dropped from the image (about 60 MB of .deb files and lists).
_CACHES = ("var/cache/apt/archives", "var/lib/apt/lists")


def create_rootfs(target: Path, *, suite: str, variant: str, include: tuple[str, ...], timeout: float,
                  mirror: str | None = None) -> None:
    """debootstrap SUITE into target (which must not exist); the default mirror is debootstrap's own."""
    exe = proc.find_tool("debootstrap", "apt-get install -y debootstrap (as root)")
    argv: list[str] = [exe, f"--variant={variant}"]
    if include:
        argv.append("--include=" + ",".join(include))
    argv += [suite, str(target)]
    if mirror:
        argv.append(mirror)
    proc.run(argv, timeout=timeout, what=f"debootstrap {suite}")
    for rel in _CACHES:
        d = target / rel
        if d.is_dir():
            for child in d.iterdir():
                if child.is_file() and child.name not in ("lock",):
                    child.unlink()
                elif child.is_dir() and child.name != "partial":
                    shutil.rmtree(child)


def pack_rootfs(source: Path, tarball: Path, *, timeout: float) -> None:
    """tar the root filesystem with numeric owners (a rootfs must keep root:root, not the host's names)."""
    tmp = tarball.with_name(f"{tarball.name}.{os.getpid()}.part")
    proc.run(["tar", "--numeric-owner", "--xattrs", "-C", str(source), "-cf", str(tmp), "."],
             timeout=timeout, what="tar of the Debian rootfs")
    tmp.replace(tarball)


def release_mounts(target: Path) -> list[str]:
    """Unmount whatever an interrupted debootstrap left mounted inside target (proc, sys), deepest first,
    so that removing the directory never reaches into a live /proc or /sys. Returns what was unmounted."""
    root = str(target.resolve())
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [ln.split()[1].encode().decode("unicode_escape") for ln in lines if len(ln.split()) > 1]
    inside = sorted((p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True)
    for p in inside:
        proc.run(["umount", "--lazy", p], timeout=30, check=False, what=f"umount {p}")
    return inside
