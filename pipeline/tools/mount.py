"""umount adapter (the kubelet's leftover tmpfs/bind mounts)."""

from __future__ import annotations

from pipeline.tools import proc


def umount(path: str, *, lazy: bool = False) -> bool:
    argv = ["umount", *(["-l"] if lazy else []), path]
    return proc.run(argv, timeout=60, check=False).ok
