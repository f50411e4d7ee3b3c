"""Debian's package database about a tool binary: which package owns the file, and whether the file is still the
one that package installed (dpkg's recorded md5sums, /var/lib/dpkg/info/<package>[:<arch>].md5sums).

The tools that come from Debian packages (docker.io, git, skopeo, docker-registry, debootstrap, socat) are not
pinned in toolchain.lock.json: apt verified each package against the mirror's signed Release file when it was
installed, and the version is Debian's to choose. What is left to check on use is that the file was not changed
since: `dpkg --verify` does exactly this check, from the same md5sums; reading the file ourselves checks one
binary instead of every file of the package. MD5 finds a changed or corrupted file; it is no defence against
root rewriting the database itself (nothing on the machine is).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.tools import proc

DPKG_INFO = Path("/var/lib/dpkg/info")


@dataclass(frozen=True)
class DpkgFile:
    """package: the owner ("" when none); version: its installed version; md5: the file's md5 (hex);
    recorded: the md5 dpkg recorded for it ("" when none); ok: owned and equal."""

    path: str
    package: str = ""
    version: str = ""
    md5: str = ""
    recorded: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.package) and bool(self.recorded) and self.md5 == self.recorded

    def describe(self) -> str:
        """One phrase for `invoke doctor`."""
        if not self.package:
            return f"{self.path}: not from a Debian package (no dpkg record to check it against)"
        where = f"{self.path} from Debian package {self.package} {self.version}".rstrip()
        if not self.recorded:
            return f"{where}: dpkg recorded no md5sum for it"
        if self.ok:
            return f"{where}: md5 {self.md5[:12]} matches dpkg's record"
        return f"{where}: md5 {self.md5} is not dpkg's recorded {self.recorded} (changed since installed)"


def check_file(path: Path, info_dir: Path = DPKG_INFO) -> DpkgFile:
    """Owner, version and md5 check of one installed file (symlinks resolved). Never raises for a file no
    package owns or a machine without dpkg: the result says so."""
    real = path.resolve()
    try:
        res = proc.run(["dpkg-query", "-S", str(real)], timeout=20, check=False)
    except Exception:   # no dpkg on this machine: nothing to check against
        return DpkgFile(str(real))
    owners = [ln.split(":", 1)[0].strip() for ln in res.stdout.splitlines()
              if ln.endswith(f": {real}") or ln.endswith(f":{real}")] if res.ok else []
    if not owners:
        return DpkgFile(str(real))
    package = owners[0].split(",")[0].strip()
    version = proc.run(["dpkg-query", "-W", "-f=${Version}", package], timeout=20, check=False).stdout.strip()
    md5 = hashlib.md5(real.read_bytes(), usedforsecurity=False).hexdigest()
    return DpkgFile(str(real), package, version, md5, recorded_md5(package, real, info_dir))


def recorded_md5(package: str, path: Path, info_dir: Path = DPKG_INFO) -> str:
    """The md5 dpkg recorded for `path` in the package's md5sums file (`<md5>  <path without leading />`), or ""."""
    rel = str(path).lstrip("/")
    for sums in (info_dir / f"{package}.md5sums", *sorted(info_dir.glob(f"{package}:*.md5sums"))):
        try:
            lines = sums.read_text().splitlines()
        except OSError:
            continue
        for ln in lines:
            md5, _, name = ln.partition("  ")
            if name.strip() == rel:
                return md5.strip()
    return ""
