"""The developer stack (`invoke up / down / logs`): the same compose files as the smoke test.

One stack per work tree, compose project `veza-dev` (VEZA_STACK_NAME names another one), the four services
on 127.0.0.1:8080-8083 (docker-compose.dev.yml; BACKEND_API_PORT, CHAT_SERVER_PORT, STREAM_SERVER_PORT,
DOCS_PORT move them). Its state lives in .pipeline/stack/<name>/: the env file (0600: it holds the generated
passwords, kept across `up`/`down` so the PostgreSQL volume keeps matching its password; removed by
`down --volumes`). Every object carries veza.pipeline.run=<name>.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import Config, Environment
from pipeline.core.errors import StageFailed, UsageError
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.names import safe_run_id
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import LABEL_RUN as RUN_LABEL
from pipeline.local import stack_spec
from pipeline.tools.compose import ComposeProject
from pipeline.tools.docker import remove_labelled
from pipeline.tools.proc import stream

DEFAULT_NAME = "veza-dev"
UP_TIMEOUT_S = 180.0
FOLLOW_TIMEOUT_S = 7 * 24 * 3600.0   # `logs --follow` runs until Ctrl-C; the timeout is only a backstop


@dataclass(frozen=True)
class DevStack:
    name: str
    state_dir: Path
    compose_dir: Path

    @property
    def dir(self) -> Path:
        return self.state_dir / "stack" / self.name

    @property
    def env_file(self) -> Path:
        return self.dir / "compose.env"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def project(self) -> ComposeProject:
        # The variables also go to compose's environment: an exported shell variable must not win over them.
        values = stack_spec.read_env_file(self.env_file) if self.env_file.exists() else {}
        files = (self.compose_dir / stack_spec.BASE_NAME, self.compose_dir / stack_spec.DEV_NAME)
        return ComposeProject(name=self.name, files=files,
                              env_file=self.env_file if values else None, workdir=self.compose_dir,
                              env=values)


def current(cfg: Config) -> DevStack:
    return DevStack(safe_run_id(os.environ.get("VEZA_STACK_NAME", DEFAULT_NAME)), cfg.state_dir,
                    stack_spec.compose_dir(cfg))


def stack_up(cfg: Config, env: Environment, reporter: Reporter) -> None:
    """Start the platform with the images of env's Release manifest (`invoke up --build` builds them first).
    UsageError (exit 2) when the environment has no Release manifest yet."""
    stack = current(cfg)
    path = manifest_path(cfg.state_dir, env.name)
    if not path.exists():
        raise UsageError(f"environment {env.name} has no Release manifest yet ({path})",
                         f"run `invoke up --env {env.name} --build`")
    manifest = Manifest.load(path)
    images = {**stack_spec.service_images(cfg, manifest), **stack_spec.infra_images(cfg)}
    # Keep the passwords of an existing stack: its PostgreSQL volume was initialised with them.
    old = stack_spec.read_env_file(stack.env_file) if stack.env_file.exists() else {}
    secret_values = {**stack_spec.new_secrets(), **{k: old[k] for k in stack_spec.SECRET_VARS if old.get(k)}}
    stack_spec.write_env_file(stack.env_file, stack_spec.stack_variables(
        stack.name, images, secret_values, {"VEZA_RESTART": "unless-stopped"}))
    project = stack.project()
    project.config()
    reporter.info(f"starting {stack.name} ({env.name} images) …")
    res = project.up(wait_timeout=UP_TIMEOUT_S)
    stack.state_file.write_text(json.dumps({"env": env.name, "project": stack.name,
                                            "images": {k: v.ref for k, v in images.items()}}, indent=2) + "\n")
    if not res.ok:
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
        raise StageFailed(f"the stack did not become healthy: {tail}",
                          "inspect it with `invoke logs`; stop it with `invoke down`")
    for addr, svc in published(project):
        reporter.info(f"  {svc:<16} http://{addr}")


def published(project: ComposeProject) -> list[tuple[str, str]]:
    """(host:port, compose service) for every published port of the stack."""
    out = []
    for s in project.ps():
        for _target, ip, port in s.publishers:
            if port:
                out.append((f"{ip or '127.0.0.1'}:{port}", s.service))
    return sorted(set(out), key=lambda x: x[1])


def stack_down(cfg: Config, reporter: Reporter, volumes: bool = False) -> None:
    """Stop the developer stack; with volumes=True also delete its data (and forget its passwords)."""
    stack = current(cfg)
    if stack.env_file.exists():
        res = stack.project().down(volumes=volumes)
        if not res.ok:
            raise StageFailed(f"docker compose down failed: {(res.stderr or res.stdout).strip()[-300:]}")
    # Whatever still carries the stack's label (all of it when the env file was lost).
    left = remove_labelled(RUN_LABEL, stack.name, volumes=volumes)
    if volumes:
        stack.env_file.unlink(missing_ok=True)
        stack.state_file.unlink(missing_ok=True)
    if left.containers or left.networks:
        raise StageFailed(f"could not remove: {left.describe()}", "remove them with docker rm -f / docker network rm")
    reporter.info(f"{stack.name} stopped" + (" and its volumes removed" if volumes else " (volumes kept)"))


def stack_logs(cfg: Config, service: str | None = None, follow: bool = False) -> None:
    """Print (or follow) the developer stack's logs; service may be `veza-backend-api` or `backend-api`."""
    stack = current(cfg)
    if not stack.env_file.exists():
        raise UsageError(f"the developer stack {stack.name} is not running (no {stack.env_file})",
                         "start it: invoke up")
    name = stack_spec.compose_service(service) if service else None
    project = stack.project()
    if name:
        known = set(project.config().get("services", {}))
        if name not in known:
            raise UsageError(f"unknown service '{service}'", f"use one of: {', '.join(sorted(known))}")
    rc = stream(project.logs_argv(name, follow=follow, tail=None if follow else 500),
                timeout=FOLLOW_TIMEOUT_S if follow else 120, on_line=print)
    if rc not in (0, 130):
        raise StageFailed(f"docker compose logs exited {rc}")
