"""What a compose run of the platform needs: its files, images, labels and per-run secrets.

The compose files (compose/) hold no image, no password and no host port: every one is a variable
filled from an env file written here for the run (mode 0600, under the run's directory, never committed).
- service images: the exact images of the Release manifest (the image ID the build recorded, which is
  content-addressed; or repository@digest when only the pushed digest is known);
- infra images: the upstream reference when present locally, else the offline `local` one of
  pipeline.toml [bases.*] (`invoke bases` builds those);
- VEZA_RUN_ID labels every container, network and volume the run creates.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.redact import register_secret
from pipeline.core.release_images import dependency_infra
from pipeline.tools import docker

BASE_NAME = "docker-compose.yml"
DEV_NAME = "docker-compose.dev.yml"      # fixed 127.0.0.1 ports for developers
SMOKE_NAME = "docker-compose.smoke.yml"  # ephemeral 127.0.0.1 ports: concurrent runs never collide
SECRET_VARS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "JWT_SECRET")


def compose_dir(cfg: Config) -> Path:
    """The project's compose directory: <project root>/compose (the root is the directory of pipeline.toml)."""
    return cfg.root / "compose"


def image_var(name: str) -> str:
    """Compose variable holding a service's or infra's image: veza-backend-api → BACKEND_API_IMAGE."""
    base = name.removeprefix("veza-")
    return re.sub(r"[^A-Z0-9]+", "_", base.upper()) + "_IMAGE"


def compose_service(name: str) -> str:
    """Service key in the compose file: veza-backend-api → backend-api (the DNS name on the network)."""
    return name.removeprefix("veza-")


@dataclass(frozen=True)
class StackImage:
    """The image compose runs for one service or infra (the deploy's choice by digest is deploy.ImageChoice)."""

    var: str
    ref: str        # what compose runs: an image ID, repository@digest or a local tag
    source: str     # manifest:image_id | manifest:digest | manifest:registry (pull by digest) | upstream | local


def service_images(cfg: Config, manifest: Manifest, names: list[str] | None = None) -> dict[str, StackImage]:
    """Per service, the exact image the manifest recorded. Missing build → one clear UsageError."""
    out: dict[str, StackImage] = {}
    missing: list[str] = []
    for svc in cfg.select(names):
        built, pushed = manifest.built(svc.name), manifest.pushed(svc.name)
        iid = built.image_id if built is not None and built.ok else None
        if built is not None and built.ok and built.registry_image:
            # Reused from the registry by the build: run by that digest (the smoke test pulls it when the engine
            # lacks it), the same reference before and after the pull.
            out[svc.name] = StackImage(image_var(svc.name), built.registry_image, "manifest:registry")
        elif iid and docker.image_id(iid) == iid:
            out[svc.name] = StackImage(image_var(svc.name), iid, "manifest:image_id")
        elif pushed is not None and pushed.digest and pushed.repository:
            # Not on this engine but pushed: compose pulls it by digest from the registry.
            out[svc.name] = StackImage(image_var(svc.name), pushed.ref, "manifest:digest")
        else:
            why = "no successful build recorded" if not iid else f"image {iid[:19]} is not on this engine"
            missing.append(f"{svc.name} ({why})")
    if missing:
        raise UsageError(f"Release manifest {manifest.path}: no image to run for " + ", ".join(missing),
                         "run `invoke build` (and `invoke push` on another machine) first")
    return out


def infra_images(cfg: Config) -> dict[str, StackImage]:
    """Per infra service the services use (release_images.dependency_infra: not the embedded Prometheus), the
    upstream image when present locally, else its offline equivalent."""
    out: dict[str, StackImage] = {}
    missing: list[str] = []
    for name in dependency_infra(cfg):
        base = cfg.bases[cfg.infra[name].base]
        if docker.image_id(base.upstream):
            out[name] = StackImage(image_var(name), base.upstream, "upstream")
        elif docker.image_id(base.local):
            out[name] = StackImage(image_var(name), base.local, "local")
        else:
            missing.append(f"{name} ({base.upstream} or {base.local})")
    if missing:
        raise UsageError("infra images not present on this engine: " + ", ".join(missing),
                         "run `invoke bases` (it pulls them, or builds them offline)")
    return out


def new_secrets() -> dict[str, str]:
    """Fresh random passwords for one run; registered so every log and report redacts them."""
    values = {var: secrets.token_urlsafe(24) for var in SECRET_VARS}
    for v in values.values():
        register_secret(v)
    return values


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v
    for var in SECRET_VARS:
        register_secret(out.get(var))
    return out


def write_env_file(path: Path, values: Mapping[str, str]) -> Path:
    """Write KEY=VALUE lines with mode 0600 from the start (the file holds passwords)."""
    for k, v in values.items():
        if "\n" in v or "\n" in k:
            raise ValueError(f"compose variable {k} holds a newline")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# generated by veza-pipeline for one compose run: holds passwords, never commit it\n")
        for k in sorted(values):
            fh.write(f"{k}={values[k]}\n")
    os.chmod(path, 0o600)
    return path


def stack_variables(run_id: str, images: Mapping[str, StackImage], secret_values: Mapping[str, str],
                    extra: Mapping[str, str] | None = None) -> dict[str, str]:
    values = {"VEZA_RUN_ID": run_id, **{c.var: c.ref for c in images.values()}, **secret_values}
    values.update(extra or {})
    return values
