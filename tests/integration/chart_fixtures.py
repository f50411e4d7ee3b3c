"""Fixtures for the chart tests: render helm/veza, validate manifests against Kubernetes schemas.

kubernetes-validate 1.37 (the pinned one) carries schemas from 1.25 on. The 1.20 schemas come from the
kubernetes-validate 1.28.3 wheel, fetched once with pip into the cache outside the work tree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT7

from pipeline.paths import CACHE_DIR, ROOT
from pipeline.tools import helm

CHART = ROOT / "helm" / "veza"
DIGESTS = CHART / "ci" / "digests-values.yaml"
ENVS = ("local", "dev", "staging", "prod")
LEGACY_WHEEL = "kubernetes-validate==1.28.3"
LEGACY_DIR = CACHE_DIR / "k8s-schemas" / "kubernetes-validate-1.28.3"


def render(env: str, kube_version: str, *extra: Path, release: str = "veza") -> list[dict[str, Any]]:
    text = helm.template(CHART, release, [CHART / f"values-{env}.yaml", DIGESTS, *extra],
                         namespace=f"veza-{env}", kube_version=kube_version)
    return [d for d in yaml.safe_load_all(text) if d]


def legacy_schema_dir(version: str) -> Path:
    """<cache>/.../v1.20.0-local-strict, extracted from the 1.28.3 wheel (downloaded once)."""
    target = LEGACY_DIR / f"v{version}-local-strict"
    if (target / "_definitions.json").exists():
        return target
    dl = LEGACY_DIR / "wheel"
    dl.mkdir(parents=True, exist_ok=True)
    if not list(dl.glob("*.whl")):
        res = subprocess.run([sys.executable, "-m", "pip", "download", LEGACY_WHEEL, "--no-deps", "-q", "-d", str(dl)],
                             capture_output=True, text=True, timeout=300, check=False)
        if res.returncode != 0:
            pytest.skip(f"cannot fetch the {version} schemas ({LEGACY_WHEEL}): {res.stderr.strip()[-200:]}")
    wheel = next(dl.glob("*.whl"))
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.startswith(prefix)]
        if not names:
            raise AssertionError(f"{wheel.name} has no schemas for {version}")
        tmp = target.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for n in names:
            (tmp / n[len(prefix):]).write_bytes(z.read(n))
        tmp.rename(target)
    return target


def validate(doc: dict[str, Any], version: str) -> None:
    """Strict schema validation of one object for a Kubernetes version; raises on any violation."""
    mm = tuple(int(x) for x in version.split(".")[:2])
    if mm >= (1, 25):
        kubernetes_validate.validate(doc, version, strict=True)
        return
    d = legacy_schema_dir(version)
    api = doc["apiVersion"]
    group, _, ver = api.rpartition("/")
    group = group.split(".")[0]
    name = f"{doc['kind'].lower()}-{group + '-' if group else ''}{ver}.json"
    path = d / name
    if not path.exists():
        raise AssertionError(f"Kubernetes {version} has no {doc['kind']} in {api}")
    schema = json.loads(path.read_text())
    defs = json.loads((d / "_definitions.json").read_text())
    spec = DRAFT7  # the 1.28.3 schemas carry no $schema
    registry: Registry[Any] = Registry().with_resources([("_definitions.json", spec.create_resource(defs))])
    jsonschema.validators.Draft7Validator(schema, registry=registry).validate(doc)
