"""Which files under the lint targets are what: Dockerfiles, YAML/JSON documents, Helm charts, Kustomizations.

A Kustomization (kustomization.yaml, kustomization.yml or Kustomization; kustomize's own file names) names
its patches: those files are partial objects that kustomize merges into a base, so they are linted as
patches, never as whole objects (kubectl.docs.kubernetes.io, "Kustomization" reference: patchesStrategicMerge,
patches, patchesJson6902).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.yamlfile import DatelessLoader  # dates stay text: 2026-02-30 is no crash

SKIP_DIRS = {".git", ".venv", "venv", "node_modules", ".pipeline", ".tools", "__pycache__", ".mypy_cache",
             ".ruff_cache", ".pytest_cache", "vendor", "target"}
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


@dataclass
class Inputs:
    """What to lint. `patches` and `json_patches` hold resolved paths of files that Kustomizations name."""

    targets: list[Path] = field(default_factory=list)
    dockerfiles: list[Path] = field(default_factory=list)
    yamls: list[Path] = field(default_factory=list)
    charts: list[Path] = field(default_factory=list)
    kustomizations: list[Path] = field(default_factory=list)
    patches: set[Path] = field(default_factory=set)
    json_patches: set[Path] = field(default_factory=set)


def is_dockerfile(p: Path) -> bool:
    """Dockerfile, Containerfile, *.Dockerfile, Dockerfile.* and Dockerfile-* (the names tools look for)."""
    n = p.name.lower()
    return (n in ("dockerfile", "containerfile") or n.endswith(".dockerfile") or n.startswith("dockerfile.")
            or n.startswith("dockerfile-"))


def _kustomize_refs(kfile: Path) -> tuple[set[Path], set[Path]]:
    """(strategic-merge patch files, JSON 6902 patch files) a Kustomization names, as resolved paths."""
    try:
        data: Any = yaml.load(kfile.read_text(errors="replace"), Loader=DatelessLoader)
    except yaml.YAMLError:
        return set(), set()
    if not isinstance(data, dict):
        return set(), set()
    base = kfile.parent
    smp: set[Path] = set()
    j6902: set[Path] = set()
    for item in data.get("patchesStrategicMerge") or []:
        if isinstance(item, str) and "\n" not in item:
            smp.add((base / item).resolve())
    for key, into in (("patches", smp), ("patchesJson6902", j6902)):
        for item in data.get(key) or []:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                into.add((base / item["path"]).resolve())
    return smp, j6902


def collect(targets: Iterable[Path]) -> Inputs:
    """Walk the targets (files or directories). A directory with Chart.yaml is one chart, not descended."""
    inputs = Inputs(targets=list(targets))
    seen: set[Path] = set()

    def add_file(p: Path) -> None:
        rp = p.resolve()
        if rp in seen:
            return
        seen.add(rp)
        if is_dockerfile(p):
            inputs.dockerfiles.append(p)
        elif p.name in KUSTOMIZATION_NAMES:
            inputs.kustomizations.append(p)
        elif p.suffix in (".yml", ".yaml", ".json"):
            inputs.yamls.append(p)

    for t in inputs.targets:
        if t.is_file():
            if t.name == "Chart.yaml":
                inputs.charts.append(t.parent)
            else:
                add_file(t)
            continue
        for dirpath, dirnames, filenames in os.walk(t):
            d = Path(dirpath)
            if (d / "Chart.yaml").is_file():
                inputs.charts.append(d)
                dirnames[:] = []          # a chart is linted rendered, not file by file
                continue
            dirnames[:] = sorted(x for x in dirnames if x not in SKIP_DIRS)
            for f in sorted(filenames):
                add_file(d / f)
    for k in inputs.kustomizations:
        smp, j6902 = _kustomize_refs(k)
        inputs.patches |= smp
        inputs.json_patches |= j6902
    return inputs


def under(path: str | Path, target: Path) -> bool:
    """Is `path` the target or inside it?"""
    p, t = Path(path).resolve(), target.resolve()
    return p == t or t in p.parents
