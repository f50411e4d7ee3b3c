"""Go toolchain adapter: build a small Go program in GOPATH mode against Debian's packaged libraries.

No module download is possible on air-gapped machines, so the program is built with GO111MODULE=off and
GOPATH=/usr/share/gocode (where Debian's golang-*-dev packages install their sources).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ToolMissing
from pipeline.core.paths import CACHE_DIR
from pipeline.tools.proc import find_tool, run

DEBIAN_GOPATH = Path("/usr/share/gocode")


def build_gopath(source: Path, out: Path, *, needs: tuple[str, ...] = (), apt: str = "",
                 timeout: float = 300) -> Path:
    """Build `source` (one .go file) into `out`; `needs` are import paths that must exist in the GOPATH."""
    go = find_tool("go", "apt-get install golang-go")
    for imp in needs:
        if not (DEBIAN_GOPATH / "src" / imp).is_dir():
            raise ToolMissing(f"Go package {imp} not found in {DEBIAN_GOPATH}/src",
                              f"apt-get install {apt or 'the Debian golang-*-dev package that provides it'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    run([go, "build", "-o", tmp, source], timeout=timeout, what=f"go build {source.name}",
        env={"GO111MODULE": "off", "GOPATH": str(DEBIAN_GOPATH), "GOFLAGS": "", "CGO_ENABLED": "0",
             "GOCACHE": str(CACHE_DIR / "go-build")})
    tmp.replace(out)
    return out


def run_program(exe: Path, args: list[str], *, input: str, timeout: float = 120) -> None:
    run([exe, *args], input=input, timeout=timeout, what=exe.name)
