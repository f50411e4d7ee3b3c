"""Strict schema validation of Kubernetes objects for a given Kubernetes version.

kubernetes-validate (the pinned one) carries the schemas of 1.25 and later. Older versions (the local
cluster runs 1.20) come from the kubernetes-validate 1.28.3 wheel, the last that carries 1.20: fetched
once into CACHE_DIR/k8s-schemas (the same place the chart tests use) and validated with jsonschema.
"""

from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.paths import CACHE_DIR

LEGACY_WHEEL = "kubernetes-validate==1.28.3"
LEGACY_DIR = CACHE_DIR / "k8s-schemas" / "kubernetes-validate-1.28.3"
# API groups of Kubernetes itself: a missing schema there means "not served by this version"
CORE_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
               "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io",
               "admissionregistration.k8s.io", "apiextensions.k8s.io", "certificates.k8s.io", "events.k8s.io",
               "flowcontrol.apiserver.k8s.io"}
_lock = threading.Lock()


class SchemaUnavailable(Exception):
    """No schema source for this Kubernetes version on this machine."""


@dataclass(frozen=True)
class Violation:
    path: tuple[str | int, ...]   # where in the object (empty: the object itself)
    message: str

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path)
        return f"{where}: {self.message}" if where else self.message


def _mm(version: str) -> tuple[int, int]:
    major, minor = version.lstrip("v").split(".")[:2]
    return int(major), int(minor)


def legacy_schema_dir(version: str) -> Path:
    target = LEGACY_DIR / f"v{version}-local-strict"
    with _lock:
        if (target / "_definitions.json").exists():
            return target
        wheel_dir = LEGACY_DIR / "wheel"
        wheels = sorted(wheel_dir.glob("*.whl"))
        if not wheels:
            from pipeline.tools.pip import download_wheel

            try:
                wheels = [download_wheel(LEGACY_WHEEL, wheel_dir)]
            except PipelineError as exc:
                raise SchemaUnavailable(f"schemas for Kubernetes {version} unavailable ({exc.message})") from None
        prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
        with zipfile.ZipFile(wheels[-1]) as z:
            names = [n for n in z.namelist() if n.startswith(prefix)]
            if not names:
                raise SchemaUnavailable(f"{wheels[-1].name} has no schemas for Kubernetes {version}")
            tmp = target.with_name(target.name + ".tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            for n in names:
                (tmp / n[len(prefix):]).write_bytes(z.read(n))
            tmp.rename(target)
    return target


QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


@lru_cache(maxsize=4)
def _definitions(d: Path) -> Any:
    """The legacy definitions, with Quantity as the API server decodes it: the published 1.20 schema allows a
    string or an integer, but apimachinery's Quantity.UnmarshalJSON also takes a JSON number (`cpu: 0.5`)."""
    defs = json.loads((d / "_definitions.json").read_text())
    if QUANTITY in defs.get("definitions", {}):
        defs["definitions"][QUANTITY] = {"anyOf": [{"type": "string"}, {"type": "number"}]}
    return defs


def validate(doc: dict[str, Any], version: str) -> list[Violation]:
    """Violations of one object ([] when valid). Raises SchemaUnavailable when no schema source exists."""
    api, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
    group = api.rpartition("/")[0]
    if _mm(version) >= (1, 25):
        import kubernetes_validate

        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            return [_missing(api, kind, version, group)] if group in CORE_GROUPS else []
        except kubernetes_validate.ValidationError as exc:
            return [_describe(getattr(exc, "caused_by", exc))]
        except kubernetes_validate.InvalidSchemaError as exc:
            return [Violation((), f"invalid schema: {exc}")]
        return []
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT7

    d = legacy_schema_dir(version)
    g, _, ver = api.rpartition("/")
    name = f"{kind.lower()}-{g.split('.')[0] + '-' if g else ''}{ver}.json"
    path = d / name
    if not path.exists():
        return [_missing(api, kind, version, group)] if group in CORE_GROUPS else []
    schema = json.loads(path.read_text())
    defs = DRAFT7.create_resource(_definitions(d))
    registry: Registry[Any] = Registry().with_resources([("_definitions.json", defs)])
    validator = jsonschema.validators.Draft7Validator(schema, registry=registry)
    return [_describe(e) for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))[:5]]


def _missing(api: str, kind: str, version: str, group: str) -> Violation:
    return Violation((), f"Kubernetes {version} does not serve {kind} in {api}")


def _describe(err: Any) -> Violation:
    path = tuple(getattr(err, "absolute_path", []) or [])
    return Violation(path, str(getattr(err, "message", err)).splitlines()[0])
