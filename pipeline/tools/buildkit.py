"""The image builder: the best one this machine has — buildx, else a docker CLI that drives the engine's
built-in BuildKit, else the legacy builder — and `build()` with it.

Why three: BuildKit keeps cache mounts (the Go and Cargo caches survive between builds) and reports steps;
docker CLIs from 23.0 on reach BuildKit only through the buildx plugin, while the 20.10 CLI (Debian's
`docker.io` package) drives the engine's BuildKit itself with DOCKER_BUILDKIT=1 and the built-in Dockerfile
frontend (no `# syntax=` image to pull). Without either, the legacy builder runs a Dockerfile from which the
BuildKit-only flags (`RUN --mount=…`, `FROM --platform=…`) are removed: slower, same image.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import ToolMissing, UsageError
from pipeline.core.paths import CACHE_DIR, TOOLS_BIN
from pipeline.tools import proc

KINDS = ("buildx", "buildkit", "legacy")
# Where Debian's docker.io package puts its CLI (`dpkg -L docker.io`), also looked at when another CLI is first.
DEBIAN_CLI = "/usr/bin/docker"
FIRST_CLI_WITHOUT_BUILTIN_BUILDKIT = 23   # docker/cli 23.0 made `docker build` a buildx alias
DETECT_CACHE = CACHE_DIR / "builder-detect.json"


@dataclass(frozen=True)
class Builder:
    """The builder that runs: kind (buildx | buildkit | legacy), the docker CLI it uses, and why it was chosen."""

    kind: str
    cli: str
    version: str
    why: str

    @property
    def label(self) -> str:
        return {"buildx": "BuildKit (buildx)", "buildkit": "BuildKit (docker CLI, DOCKER_BUILDKIT=1)",
                "legacy": "legacy builder"}[self.kind]


def _clis() -> list[str]:
    """Every docker CLI on PATH (project tools dir first), then Debian's, each once (by real path)."""
    dirs = [str(TOOLS_BIN), *os.environ.get("PATH", "").split(os.pathsep)]
    seen: dict[str, str] = {}
    for d in [*dirs, os.path.dirname(DEBIAN_CLI)]:
        path = os.path.join(d, "docker") if d else ""
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            seen.setdefault(os.path.realpath(path), path)
    return list(seen.values())


def _client_version(cli: str) -> str:
    """The CLI's own version (`docker --version`: no engine call), e.g. "20.10.24+dfsg1"."""
    res = proc.run([cli, "--version"], timeout=20, check=False)
    m = re.search(r"version ([^\s,]+)", res.stdout)
    return m.group(1) if m else ""


def _major(version: str) -> int:
    m = re.match(r"(\d+)\.", version)
    return int(m.group(1)) if m else 0


def plugin_dirs() -> list[str]:
    """Where docker CLIs look for plugins such as buildx (docker/cli's default plugin directories)."""
    config = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return [os.path.join(config, "cli-plugins"), "/usr/local/lib/docker/cli-plugins",
            "/usr/local/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins",
            "/usr/libexec/docker/cli-plugins"]


def _fingerprint(clis: list[str]) -> str:
    """Identity of what detection looked at: each CLI and buildx plugin file (path, size, mtime)."""
    parts = []
    for path in [*clis, *(os.path.join(d, "docker-buildx") for d in plugin_dirs())]:
        try:
            st = os.stat(path)
            parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:-")
    return "|".join(parts)


def _cached(fingerprint: str) -> dict[str, Builder] | None:
    try:
        data = json.loads(DETECT_CACHE.read_text())
        if data.get("fingerprint") != fingerprint:
            return None
        return {k: Builder(**v) for k, v in data["found"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(fingerprint: str, found: dict[str, Builder]) -> None:
    try:
        DETECT_CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = DETECT_CACHE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "found": {k: vars(b) for k, b in found.items()}}))
        os.replace(tmp, DETECT_CACHE)
    except OSError:
        pass   # a cache: detection simply runs again next time


@functools.lru_cache(maxsize=4)
def detect(prefer: str = "auto") -> Builder:
    """The builder to use: `prefer` = auto | buildx | buildkit | legacy (config `[build].builder`).

    auto: buildx where the plugin answers; else a CLI older than 23.0 (these drive BuildKit without
    buildx); else the legacy builder. The probe (a few CLI runs) is cached in CACHE_DIR until a CLI or a
    buildx plugin file changes. Raises UsageError for an unknown kind and ToolMissing when the preferred
    kind is not available or no docker CLI exists at all.
    """
    if prefer not in ("auto", *KINDS):
        raise UsageError(f"[build].builder = {prefer!r} is not a builder", "use auto, buildx, buildkit or legacy")
    clis = _clis()
    if not clis:
        raise ToolMissing("no docker CLI found on PATH", "apt-get install -y docker.io")
    fingerprint = _fingerprint(clis)
    found = _cached(fingerprint)
    if found is None:
        found = _probe(clis)
        _store(fingerprint, found)
    if prefer == "auto":
        return next(found[k] for k in KINDS if k in found)
    if prefer not in found:
        raise ToolMissing(f"[build].builder = {prefer!r} but this machine has no {prefer} builder",
                          "set [build].builder = \"auto\" or install it (docker.io's 20.10 CLI, or buildx)")
    chosen = found[prefer]
    return Builder(chosen.kind, chosen.cli, chosen.version, f"[build].builder = {prefer!r}; {chosen.why}")


def _probe(clis: list[str]) -> dict[str, Builder]:
    """Every builder kind this machine offers (legacy always), each with the CLI that runs it."""
    versions = {cli: _client_version(cli) for cli in clis}
    found: dict[str, Builder] = {}
    for cli in clis:
        bx = proc.run([cli, "buildx", "version"], timeout=20, check=False)
        if bx.ok:
            found["buildx"] = Builder("buildx", cli, bx.stdout.strip().splitlines()[0],
                                      f"the buildx plugin answers ({cli})")
            break
    for cli in clis:
        v = versions[cli]
        if v and _major(v) < FIRST_CLI_WITHOUT_BUILTIN_BUILDKIT:
            found["buildkit"] = Builder("buildkit", cli, v, f"no buildx plugin; {cli} (CLI {v}) drives the "
                                        "engine's BuildKit itself (DOCKER_BUILDKIT=1)")
            break
    found["legacy"] = Builder("legacy", clis[0], versions[clis[0]],
                              "no buildx plugin and no docker CLI older than 23.0 (the ones that drive BuildKit "
                              "without buildx): install Debian's docker.io or the buildx plugin")
    return found


_MOUNT_FLAGS = re.compile(r"^(\s*RUN\s+)((?:--mount=\S+\s*(?:\\\r?\n\s*)?)+)", re.IGNORECASE | re.MULTILINE)
_PLATFORM_FLAG = re.compile(r"^(\s*FROM\s+)--platform=\S+\s+", re.IGNORECASE | re.MULTILINE)


def legacy_dockerfile(text: str) -> str:
    """A Dockerfile the legacy builder accepts: `RUN --mount=…` and `FROM --platform=…` flags removed.

    The steps and their order are unchanged, so the image has the same content; only the caches that the
    mounts kept between builds are lost (the files a cache mount holds never enter the image).
    """
    return _PLATFORM_FLAG.sub(r"\1", _MOUNT_FLAGS.sub(r"\1", text))


def build_argv(builder: Builder, *, context: Path, dockerfile: Path, tags: list[str],
               build_args: Mapping[str, str], labels: Mapping[str, str], no_cache: bool,
               iidfile: Path, platform: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) of one build with this builder; secrets never go here (argv is visible).

    `platform` ("linux/arm64") adds `--platform`: the target platform (BuildKit sets TARGETOS/TARGETARCH;
    a builder stage `FROM --platform=$BUILDPLATFORM` still runs on this machine). None: the machine's own.
    """
    if builder.kind == "buildx":
        argv = [builder.cli, "buildx", "build", "--load", "--progress", "plain"]
        env = {}
    elif builder.kind == "buildkit":
        argv = [builder.cli, "build", "--progress", "plain"]
        env = {"DOCKER_BUILDKIT": "1"}
    else:
        argv = [builder.cli, "build"]
        env = {"DOCKER_BUILDKIT": "0"}
    argv += ["-f", str(dockerfile), "--iidfile", str(iidfile)]
    for t in tags:
        argv += ["-t", t]
    for k, v in sorted(build_args.items()):
        argv += ["--build-arg", f"{k}={v}"]
    for k, v in sorted(labels.items()):
        argv += ["--label", f"{k}={v}"]
    if no_cache:
        argv.append("--no-cache")
    if platform:
        argv += ["--platform", platform]
    argv.append(str(context))
    return argv, env


def build(builder: Builder, *, context: Path, dockerfile: Path, tags: list[str], build_args: Mapping[str, str],
          labels: Mapping[str, str], no_cache: bool, on_line: Callable[[str], None], timeout: float,
          iidfile: Path, stop: threading.Event | None = None, platform: str | None = None) -> int:
    """Build one image, streaming each output line to on_line; returns the exit code.

    The image ID lands in iidfile. The legacy builder gets `legacy_dockerfile()` of the Dockerfile, written
    beside iidfile. Killed after `timeout` seconds or when `stop` is set. `platform`: see build_argv (the
    legacy builder is never given one: build_platforms.check_builder refuses that plan first).
    """
    if builder.kind == "legacy":
        derived = iidfile.with_suffix(".legacy.Dockerfile")
        derived.write_text(legacy_dockerfile(dockerfile.read_text()))
        dockerfile = derived
    argv, env = build_argv(builder, context=context, dockerfile=dockerfile, tags=tags, build_args=build_args,
                           labels=labels, no_cache=no_cache, iidfile=iidfile, platform=platform)
    return proc.stream(argv, timeout=timeout, on_line=on_line, env=env, stop=stop)


