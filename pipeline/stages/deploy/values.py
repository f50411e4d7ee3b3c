"""What a deploy installs, decided without a cluster: the image per service, the generated values, the hash.

Pure functions (no subprocess, no cluster): unit-tested in tests/unit/test_deploy_logic.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest, Pushed
from pipeline.core.yamlfile import load_text

CHART = Path("helm/veza")


@dataclass(frozen=True)
class ImageChoice:
    """The image one service gets: `repository@digest`, taken from the manifest or kept from the cluster."""

    service: str
    repository: str
    digest: str
    source: str  # "manifest" | "deployed"

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}"


def resource_name(release: str, service: str) -> str:
    """The chart's veza.fullname: the service name when it starts with the release name, else release-service
    (at most 63 characters, the Kubernetes name limit)."""
    name = service if service == release or service.startswith(f"{release}-") else f"{release}-{service}"
    return name[:63].rstrip("-")


# blue-green's colours (the chart's services.<name>.blueGreen): blue is the service's own Deployment, green its
# <name>-green; the Deployment's metadata label veza.io/role says which one the main Service selects
COLOURS = ("blue", "green")
ROLE_LABEL = "veza.io/role"


def colour_deployment(release: str, service: str, colour: str) -> str:
    """The Deployment of `service`'s `colour` (blue: resource_name, green: resource_name + "-green")."""
    full = resource_name(release, service)
    return full if colour == "blue" else f"{full}-green"


def active_colour(values: dict[str, Any], service: str) -> str:
    """The colour serving `service` in a revision's `values` (blue unless its blueGreen is enabled with active
    green)."""
    bg = (((values.get("services") or {}).get(service) or {}).get("blueGreen") or {})
    return "green" if bg.get("enabled") and bg.get("active") == "green" else "blue"


def serving_deployment(release: str, service: str, deployments: Mapping[str, dict[str, Any]]) -> str:
    """The name of the Deployment that serves `service` among `deployments` (as kubectl gives them, by name):
    its green colour when that one is labelled the active one, else the service's own."""
    green = deployments.get(colour_deployment(release, service, "green"))
    labels = ((green or {}).get("metadata") or {}).get("labels") or {}
    return colour_deployment(release, service, "green" if labels.get(ROLE_LABEL) == "active" else "blue")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's values coalescing for maps: `over` wins, nested maps merge, lists are replaced. Inputs unchanged."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def recorded_pushes(manifest: Manifest | None) -> dict[str, Pushed]:
    """service name → its push record, for each service the Release manifest says was pushed ok ({} without a
    manifest)."""
    return manifest.pushed_images() if manifest is not None else {}


def choose_images(cfg: Config, pushed: Mapping[str, Pushed], selected: Sequence[str],
                  deployed_values: dict[str, Any] | None) -> tuple[dict[str, ImageChoice], list[str]]:
    """Which image each service gets: the manifest's pushed digest (`pushed`: service → push record, see
    recorded_pushes) for the services to deploy; the deployed one for the others. Returns (choices by
    service, notes to print).

    Raises UsageError when a service named in `selected` has no pushed digest."""
    choices: dict[str, ImageChoice] = {}
    notes: list[str] = []
    deployed_svcs = (deployed_values or {}).get("services", {}) or {}
    for svc in cfg.services:
        p = pushed.get(svc.name)
        wanted = not selected or svc.name in selected
        if wanted and p is not None and p.ok and p.digest:
            choices[svc.name] = ImageChoice(svc.name, p.repository, p.digest, "manifest")
            continue
        if wanted and selected:
            raise UsageError(f"service '{svc.name}' has no pushed digest in the Release manifest",
                             f"run: invoke build push --service {svc.name} --env <env>")
        old = (deployed_svcs.get(svc.name) or {}).get("image") or {}
        if old.get("digest") and old.get("repository") and (deployed_svcs.get(svc.name) or {}).get("enabled", True):
            choices[svc.name] = ImageChoice(svc.name, str(old["repository"]), str(old["digest"]), "deployed")
            if wanted:
                notes.append(f"{svc.name}: no pushed digest in the manifest; keeping the deployed {old['digest'][:19]}")
        elif wanted:
            notes.append(f"{svc.name}: not built/pushed and not deployed yet: left out of this release")
    return choices, notes


def image_values(cfg: Config, choices: dict[str, ImageChoice], hash_: str, pull_secret: str = "") -> dict[str, Any]:
    """The generated values file: one image per service (by digest), the others disabled, the hash, and the
    pull Secret's name as `global.imagePullSecrets` when the environment has one (its name only: the
    credentials live in the Secret, prepare.ensure_pull_secret)."""
    services: dict[str, Any] = {}
    for svc in cfg.services:
        c = choices.get(svc.name)
        if c is None:
            services[svc.name] = {"enabled": False}
        else:
            services[svc.name] = {"enabled": True,
                                  "image": {"repository": c.repository, "digest": c.digest, "tag": ""}}
    glob: dict[str, Any] = {"deployHash": hash_}
    if pull_secret:
        glob["imagePullSecrets"] = [{"name": pull_secret}]
    return {"global": glob, "services": services}


def deploy_hash(chart_dir: Path, values_files: Sequence[Path], choices: dict[str, ImageChoice],
                pull_secret: str = "") -> str:
    """A hash of everything that defines the release: chart files (not ci/), values files, chosen images, the
    pull Secret's name when there is one (adding one is a change to deploy). Returns "sha256:<64 hex>"."""
    h = hashlib.sha256()
    for p in sorted(chart_dir.rglob("*")):
        if p.is_file() and "ci" not in p.relative_to(chart_dir).parts:
            h.update(str(p.relative_to(chart_dir)).encode() + b"\0" + p.read_bytes() + b"\0")
    for f in values_files:
        h.update(b"values\0" + f.read_bytes() + b"\0")
    h.update(json.dumps({k: v.ref for k, v in sorted(choices.items())}, sort_keys=True).encode())
    if pull_secret:
        h.update(b"\0pull\0" + pull_secret.encode())
    return "sha256:" + h.hexdigest()


def env_values_files(env: Environment, extra: Sequence[Path] = ()) -> list[Path]:
    """The environment's values file, then the extra ones. Raises UsageError when the former is missing."""
    if not env.values_file.is_file():
        raise UsageError(f"values file {env.values_file} of environment {env.name} does not exist",
                         f"create it or fix values_file under [environments.{env.name}]")
    return [env.values_file, *extra]


def merged_values(chart: Path, values_files: Sequence[Path], generated: dict[str, Any]) -> dict[str, Any]:
    """The values Helm computes: the chart's values.yaml, each file in order, then the generated ones."""
    # dates stay text (as Helm reads them); bad YAML is one line (UsageError), no traceback
    merged: dict[str, Any] = load_text((chart / "values.yaml").read_text(), "values.yaml") or {}
    for f in values_files:
        merged = deep_merge(merged, load_text(f.read_text(), str(f)) or {})
    return deep_merge(merged, generated)


def ready_path(cfg: Config, service: str, merged: dict[str, Any]) -> str:
    """The HTTP path that answers 200 when `service` is ready: pipeline.toml's, else the chart's probe path."""
    try:
        return str(cfg.service(service).ready_path)
    except UsageError:
        return str(merged["services"][service]["probes"]["readinessPath"])
