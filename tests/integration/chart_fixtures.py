"""Fixtures for the chart tests: render helm/veza, validate manifests against Kubernetes schemas.

kubernetes-validate 1.37 (the pinned one) carries schemas from 1.25 on. The 1.20 schemas come from the
kubernetes-validate 1.28.3 wheel, fetched once with pip into the cache outside the work tree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT7

from pipeline.core.paths import ROOT
from pipeline.lint.k8s_schema import legacy_schema_dir
from pipeline.tools import helm

CHART = ROOT / "helm" / "veza"
DIGESTS = CHART / "ci" / "digests-values.yaml"
ENVS = ("local", "dev", "staging", "prod")


def render(env: str, kube_version: str, *extra: Path, release: str = "veza") -> list[dict[str, Any]]:
    text = helm.template(CHART, release, [CHART / f"values-{env}.yaml", DIGESTS, *extra],
                         namespace=f"veza-{env}", kube_version=kube_version)
    return [d for d in yaml.safe_load_all(text) if d]


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
