"""Image platforms (`os/arch[/variant]`): the grammar of `platforms` in pipeline.toml, the machine's own
platform, and which platforms a service is built for in an environment.

Grammar and values: the OCI image index spec (image-spec `image-index.md`, "platform": `os` and
`architecture` take the values of Go's GOOS and GOARCH, `variant` the CPU variant, e.g. `v7` for 32-bit
ARM, `v8` for arm64) and containerd's `platforms` package (the `os/arch[/variant]` specifier that
`docker build --platform` and `docker buildx` accept; `arm64/v8` is arm64's default variant).
"""

from __future__ import annotations

import platform as _py_platform
import re
from dataclasses import dataclass

# GOOS / GOARCH values an OCI image may name (Go's `go tool dist list`, the ones with container images).
OS_VALUES = ("linux", "windows", "freebsd", "darwin")
ARCH_VALUES = ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64")
# Variants the OCI spec lists per architecture.
VARIANTS = {"arm": ("v5", "v6", "v7", "v8"), "arm64": ("v8",), "amd64": ("v1", "v2", "v3", "v4")}
# What people write instead of the GOARCH name (uname -m, Debian/Rust names) → the OCI value.
ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armv7l": "arm",
                "i386": "386", "i686": "386", "ppc64el": "ppc64le"}
_PART = re.compile(r"[a-z0-9_]+\Z")


class PlatformError(ValueError):
    """A platform string that is not `os/arch[/variant]` with known values; str() is the one-line problem,
    `fix` the correction."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.fix = fix


@dataclass(frozen=True, order=True)
class Platform:
    """One OCI platform: os (GOOS), architecture (GOARCH), variant ("" when none)."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @property
    def slug(self) -> str:
        """`linux-arm64-v8`: the platform in a tag or file name."""
        return str(self).replace("/", "-")

    def descriptor(self) -> dict[str, str]:
        """The `platform` object of an OCI index entry (`{"architecture", "os"[, "variant"]}`)."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


def parse_platform(text: str) -> Platform:
    """`linux/arm64` → Platform("linux", "arm64"). Raises PlatformError (with the fix) for anything else:
    wrong shape, unknown os/arch (with the GOARCH name for aliases like x86_64), a variant the arch has not.
    `arm64/v8` is normalised to `arm64` (its only variant)."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(_PART.match(p) for p in parts):
        raise PlatformError(f"'{text}' is not an OCI platform", 'write os/arch[/variant], e.g. "linux/arm64"')
    os_, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else ""
    if os_ not in OS_VALUES:
        raise PlatformError(f"'{text}': unknown os '{os_}'", f"use one of: {', '.join(OS_VALUES)}")
    if arch in ARCH_ALIASES:
        better = "/".join(p for p in (os_, ARCH_ALIASES[arch], variant) if p)
        raise PlatformError(f"'{text}': '{arch}' is not a GOARCH name", f'write "{better}"')
    if arch not in ARCH_VALUES:
        raise PlatformError(f"'{text}': unknown architecture '{arch}'", f"use one of: {', '.join(ARCH_VALUES)}")
    if variant and variant not in VARIANTS.get(arch, ()):
        allowed = ", ".join(VARIANTS.get(arch, ())) or "none"
        raise PlatformError(f"'{text}': {arch} has no variant '{variant}'", f"use a variant of {arch}: {allowed}")
    if arch == "arm64" and variant == "v8":
        variant = ""
    return Platform(os_, arch, variant)


def parse_platforms(texts: tuple[str, ...] | list[str]) -> tuple[Platform, ...]:
    """Each item parsed (parse_platform), order kept; PlatformError also for an empty list or a platform
    named twice (after normalisation)."""
    if not texts:
        raise PlatformError("is empty", 'list at least one platform, e.g. ["linux/amd64"], or remove the key')
    out: list[Platform] = []
    for t in texts:
        p = parse_platform(t)
        if p in out:
            raise PlatformError(f"'{t}' is listed twice", "list each platform once")
        out.append(p)
    return tuple(out)


def native_platform(machine: str | None = None) -> Platform:
    """The platform of this machine (`uname -m` mapped to GOARCH: x86_64 → linux/amd64, aarch64 → linux/arm64,
    armv7l → linux/arm/v7). Images built without `--platform` are this platform."""
    m = (machine or _py_platform.machine()).lower()
    if m in ("armv7l", "armv7"):
        return Platform("linux", "arm", "v7")
    if m in ("armv6l",):
        return Platform("linux", "arm", "v6")
    arch = ARCH_ALIASES.get(m, m)
    return Platform("linux", arch)


def effective_platforms(service_platforms: tuple[Platform, ...], env_platforms: tuple[Platform, ...],
                        native: Platform | None = None) -> tuple[tuple[Platform, ...], str]:
    """(platforms, where they come from) of one service in one environment: the service's own list when it
    has one (`services.platforms`), else the environment's (`environments.<env>.platforms`), else the
    machine's platform only ("native")."""
    if service_platforms:
        return service_platforms, "service"
    if env_platforms:
        return env_platforms, "environment"
    return (native or native_platform(),), "native"


def primary_platform(platforms: tuple[Platform, ...], native: Platform | None = None) -> Platform:
    """The child the local engine runs (smoke, scan, local tags): the native platform when listed, else
    the first one."""
    native = native or native_platform()
    return native if native in platforms else platforms[0]
