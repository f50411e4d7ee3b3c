"""Source-build tools used by the local cluster's build: tar, patch, go (GOPATH mode) and gcc."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pipeline.tools import proc


def untar(archive: Path, dest: Path, *, timeout: float = 600) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    proc.run(["tar", "-xf", str(archive), "-C", str(dest)], timeout=timeout, what=f"tar -xf {archive.name}")


def apply_patch(patch: Path, tree: Path, *, timeout: float = 60) -> None:
    """Apply a -p1 unified diff; refuses a patch that does not apply cleanly (no fuzz, no .orig/.rej files)."""
    proc.run(["patch", "-p1", "--forward", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-", "-i", str(patch)],
             timeout=timeout, cwd=tree, what=f"patch {patch.name}")


def go_env(gopath: Path, gocache: Path) -> dict[str, str]:
    """GOPATH mode (Kubernetes 1.20 does not build in module mode with Go 1.19), static binaries, no proxy."""
    return {"GOPATH": str(gopath), "GOCACHE": str(gocache), "GO111MODULE": "off", "CGO_ENABLED": "0",
            "GOFLAGS": "", "GOPROXY": "off"}


def go_version(*, timeout: float = 30) -> str:
    return proc.run(["go", "version"], timeout=timeout).stdout.strip()


def go_build(packages: Sequence[str], *, out: Path, ldflags: str, env: Mapping[str, str], cwd: Path,
             timeout: float, on_line: Callable[[str], None]) -> int:
    """go build -v (one line per compiled package, for the progress display); out is a file or a directory/."""
    argv = ["go", "build", "-v", "-ldflags", ldflags, "-o", str(out), *packages]
    return proc.stream(argv, timeout=timeout, on_line=on_line, env=env, cwd=cwd)


def run_binary(argv: Sequence[str | Path], *, env: Mapping[str, str], cwd: Path, timeout: float, what: str) -> str:
    return proc.run(argv, timeout=timeout, env=env, cwd=cwd, what=what).stdout


def gcc_static(source: Path, out: Path, *, defines: Mapping[str, str], timeout: float = 120) -> None:
    argv = ["gcc", "-Os", "-Wall", "-Werror", "-static", *[f"-D{k}={v}" for k, v in defines.items()],
            "-o", str(out), str(source)]
    proc.run(argv, timeout=timeout, what="gcc pause.c")
    proc.run(["strip", str(out)], timeout=timeout)
