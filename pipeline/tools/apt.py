"""apt/dpkg adapter: what is installed, install what is missing, and fetch Debian source packages through a
private apt configuration (its own sources, lists and cache) so the machine's apt setup is never changed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import ToolMissing
from pipeline.tools import proc

_SOURCES_DIR = Path("/etc/apt/sources.list.d")
_SOURCES_LIST = Path("/etc/apt/sources.list")


def missing_packages(names: Iterable[str]) -> list[str]:
    """The packages of names that dpkg does not report as installed."""
    wanted = list(names)
    res = proc.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *wanted], timeout=30, check=False)
    installed = {ln.split()[0].split(":")[0] for ln in res.stdout.splitlines() if ln.endswith(" installed")}
    return [n for n in wanted if n not in installed]


def ensure_installed(names: Sequence[str], *, timeout: float = 900) -> list[str]:
    """apt-get install the packages that are missing (only those); returns what was installed."""
    todo = missing_packages(names)
    if not todo:
        return []
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    upd = proc.run(["apt-get", "-qq", "update"], timeout=timeout, check=False, env=env)
    res = proc.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *todo],
                   timeout=timeout, check=False, env=env)
    if not res.ok:
        tail = (res.stderr or upd.stderr).strip().splitlines()[-2:]
        raise ToolMissing(f"cannot install {' '.join(todo)}: {' | '.join(tail)}",
                          f"install them by hand: apt-get install -y {' '.join(todo)}")
    return todo


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str


def _codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def machine_sources(sources_dir: Path = _SOURCES_DIR, sources_list: Path = _SOURCES_LIST,
                    codename: str | None = None) -> list[AptSource]:
    """The machine's enabled binary sources for its release's main suite (deb822 and one-line formats)."""
    codename = codename if codename is not None else _codename()
    found: list[AptSource] = []
    for path in sorted(sources_dir.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    if suite == codename:
                        found.append(AptSource(uri, suite, tuple(fields.get("components", "main").split()),
                                               fields.get("signed-by", "")))
    for path in [sources_list, *sorted(sources_dir.glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line)
            if m and m.group(3) == codename:
                opts = m.group(1) or ""
                sb = re.search(r"signed-by=(\S+?)[\s\]]", opts)
                found.append(AptSource(m.group(2), m.group(3), tuple(m.group(4).split()), sb.group(1) if sb else ""))
    return found


class PrivateApt:
    """apt-get with its own sources (deb + deb-src from the machine's sources), lists and cache under root."""

    def __init__(self, root: Path, source_suite: str = "") -> None:
        self.root = root
        self.source_suite = source_suite  # deb-src from this suite (default: the machine's own release)

    def _opts(self) -> list[str]:
        r = self.root
        return ["-o", f"Dir::Etc::SourceList={r / 'sources.list'}", "-o", f"Dir::Etc::SourceParts={r / 'parts'}",
                "-o", f"Dir::State::Lists={r / 'lists'}", "-o", f"Dir::Cache={r / 'cache'}",
                "-o", "APT::Sandbox::User=root"]

    def configure(self) -> None:
        sources = machine_sources()
        if not sources:
            raise ToolMissing("no enabled Debian apt source for this release found in /etc/apt",
                              "configure the Debian main archive in /etc/apt/sources.list.d/")
        for sub in ("lists/partial", "cache/archives/partial", "parts"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        lines = []
        for s in sources:
            opt = f"[signed-by={s.signed_by}] " if s.signed_by else ""
            lines.append(f"deb {opt}{s.uri} {s.suite} {' '.join(s.components)}")
            lines.append(f"deb-src {opt}{s.uri} {self.source_suite or s.suite} {' '.join(s.components)}")
        (self.root / "sources.list").write_text("\n".join(lines) + "\n")

    def update(self, *, timeout: float = 600) -> None:
        proc.run(["apt-get", *self._opts(), "-qq", "update"], timeout=timeout, what="apt-get update (private)")

    def download_source(self, package: str, dest: Path, *, timeout: float = 1200) -> None:
        proc.run(["apt-get", *self._opts(), "-qq", "source", "--download-only", package], timeout=timeout,
                 cwd=dest, what=f"apt-get source {package}")

    def download_binary(self, package: str, dest: Path, *, timeout: float = 600) -> None:
        proc.run(["apt-get", *self._opts(), "-qq", "download", package], timeout=timeout, cwd=dest,
                 what=f"apt-get download {package}")


def extract_deb(deb: Path, dest: Path, *, timeout: float = 120) -> None:
    proc.run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=timeout)
