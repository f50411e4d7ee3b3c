"""The Release manifest: one JSON document per release, extended by every stage, written atomically.

Layout (schema: pipeline/core/schemas/manifest.schema.json, documented in README "Release manifest"):

    {
      "schema_version": 1,
      "release_id": "<env>-<short sha>[-dirty-<hash>]",
      "env": "local", "created": "...", "updated": "...",
      "version": {... Version facts ...},
      "stages": {"build": {"status": "ok", "started": ..., "finished": ..., "duration_s": ...}, ...},
      "services": {
        "veza-backend-api": {
          "repository": "127.0.0.1:5000/veza/veza-backend-api",
          "tags": ["sha-abc1234", "main"],
          "input_digest": "sha256:...",
          "build":  {"status": "built|reused|failed", "image_id": "sha256:...", "duration_s": 1.2, "log": "..."},
          "scan":   {"status": "pass|blocked|error", "counts": {...}, "report": "...", "sbom": "..."},
          "push":   {"status": "pushed|skipped|failed", "digest": "sha256:...", "tags_pushed": [...]},
          "smoke":  {"status": "pass|fail", ...},
          "deploy": {"status": "deployed|noop|rolled_back", "revision": 3}
        }
      }
    }

Each service's stage records are written by that stage only, through `record()`; readers use the typed
views (`built()`, `pushed()`, `scanned()`, `smoked()`, `deployed()`). The runner alone writes
`stages.<name>` (`record_stage()`). One manifest per environment: `manifest_path(cfg, env)`.
Secrets never enter it: every string is redacted on save.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import UsageError
from pipeline.core.redact import redact
from pipeline.core.stage_registry import STAGE_REGISTRY
from pipeline.core.vocab import BuildStatus, PushStatus, now_iso

SCHEMA_VERSION = 1
# Per-service record slots: one per stage (pipeline/core/stage_registry.py), plus these trust artifacts the
# sign stage attaches to a pushed image.
ARTIFACT_RECORDS = ("signature", "provenance")


def manifest_path(state_dir: Path, env_name: str) -> Path:
    """`<state_dir>/<env>/manifest.json`: each environment has its own record; releases never share one."""
    return state_dir / env_name / "manifest.json"


@dataclass(frozen=True)
class Built:
    """A service's build record: the local image the later stages use."""

    service: str
    status: BuildStatus
    image_id: str | None
    repository: str
    tags: tuple[str, ...]
    input_digest: str
    platform_images: Mapping[str, str] = field(default_factory=dict)   # platform → image ID; {} = native only

    @property
    def ok(self) -> bool:
        return self.status in (BuildStatus.BUILT, BuildStatus.REUSED) and bool(self.image_id)

    @property
    def local_ref(self) -> str:
        """`repository:first-tag`, as the build tagged it in the local engine."""
        return f"{self.repository}:{self.tags[0]}" if self.tags else self.repository


@dataclass(frozen=True)
class Pushed:
    """A service's push record: the registry digest every later stage deploys by."""

    status: PushStatus
    repository: str
    digest: str | None
    tags: tuple[str, ...]
    children: Mapping[str, str] = field(default_factory=dict)   # multi-platform: platform → child digest

    @property
    def ok(self) -> bool:
        return self.status in (PushStatus.PUSHED, PushStatus.SKIPPED) and bool(self.digest)

    @property
    def ref(self) -> str:
        """`repository@sha256:…` (OCI reference by digest)."""
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class Deployed:
    """A service's deploy record."""

    status: str
    revision: int | None
    digest: str | None


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same directory + rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Manifest:
    """Thread-safe view of the Release manifest; every mutation is saved at once (atomically), except inside
    `batch()`, which saves once at its end."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self._data = data
        self._lock = threading.RLock()
        self._batch_depth = 0
        self._unsaved = False

    # -- creation and loading
    @classmethod
    def new(cls, path: Path, *, env: str, release_id: str, version: dict[str, Any]) -> Manifest:
        ts = now_iso()
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "release_id": release_id, "env": env,
            "created": ts, "updated": ts, "version": version, "stages": {}, "services": {},
        }
        m = cls(path, data)
        m.save()
        return m

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"no Release manifest at {path}", "run `invoke build` first") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc})", "delete it and rerun `invoke build`") from None
        if data.get("schema_version") != SCHEMA_VERSION:
            raise UsageError(f"{path}: schema_version {data.get('schema_version')} is not {SCHEMA_VERSION}",
                             "delete it and rerun `invoke build`")
        return cls(path, data)

    @classmethod
    def load_or_none(cls, path: Path) -> Manifest | None:
        return cls.load(path) if path.exists() else None

    # -- reading
    @property
    def data(self) -> dict[str, Any]:
        """A deep copy: callers cannot mutate the manifest behind its lock."""
        with self._lock:
            return copy.deepcopy(self._data)

    @property
    def env(self) -> str:
        return str(self._data["env"])

    @property
    def release_id(self) -> str:
        return str(self._data["release_id"])

    def services(self) -> list[str]:
        with self._lock:
            return list(self._data["services"])

    def service(self, name: str) -> dict[str, Any]:
        with self._lock:
            if name not in self._data["services"]:
                raise UsageError(f"service '{name}' is not in the Release manifest {self.path}",
                                 "run `invoke build` for it first")
            return copy.deepcopy(self._data["services"][name])

    def stage_result(self, service: str, stage: str) -> dict[str, Any] | None:
        with self._lock:
            res = self._data["services"].get(service, {}).get(stage)
            return copy.deepcopy(res) if res is not None else None

    def _rec(self, service: str, stage: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._data["services"].get(service, {}).get(stage) or {})

    def built(self, service: str) -> Built | None:
        """The build record of a service, or None when it was never built in this release."""
        rec = self._rec(service, "build")
        if not rec:
            return None
        with self._lock:
            svc = self._data["services"][service]
            return Built(service, BuildStatus(rec["status"]), rec.get("image_id"), str(svc.get("repository", "")),
                         tuple(svc.get("tags") or ()), str(svc.get("input_digest", "")),
                         {str(k): str(v) for k, v in (rec.get("platforms") or {}).items()})

    def built_images(self, names: list[str] | None) -> list[Built]:
        """The built image of each named service (every recorded service when `names` is empty), checked:
        status built/reused, an image ID, a repository and tags. UsageError before anything runs otherwise."""
        names = names or self.services()
        if not names:
            raise UsageError(f"the Release manifest {self.path} lists no service", "run `invoke build` first")
        out = []
        for name in names:
            b = self.built(name)
            if b is None or not b.ok:
                raise UsageError(f"{name} has no built image in the Release manifest (build: "
                                 f"{b.status if b else 'missing'})", f"run `invoke build --service {name}`")
            if not b.tags or not b.repository:
                raise UsageError(f"{name} has no repository/tags in the Release manifest", "rerun `invoke build`")
            out.append(b)
        return out

    def pushed(self, service: str) -> Pushed | None:
        """The push record of a service, or None when it was never pushed in this release."""
        rec = self._rec(service, "push")
        if not rec:
            return None
        with self._lock:
            repo = str(self._data["services"][service].get("repository", ""))
        return Pushed(PushStatus(rec["status"]), repo, rec.get("digest"),
                      tuple(rec.get("tags_pushed") or rec.get("tags") or ()),
                      {str(k): str(v) for k, v in (rec.get("children") or {}).items()})

    def deployed(self, service: str) -> Deployed | None:
        rec = self._rec(service, "deploy")
        if not rec:
            return None
        return Deployed(str(rec["status"]), rec.get("revision"), rec.get("digest"))

    def stage(self, name: str) -> dict[str, Any] | None:
        """The runner's record of a whole stage (`stages.<name>`), or None."""
        with self._lock:
            rec = self._data["stages"].get(name)
            return copy.deepcopy(rec) if rec is not None else None

    # -- writing (each saves)
    def set_service(self, name: str, **fields: Any) -> None:
        with self._lock:
            self._data["services"].setdefault(name, {}).update(fields)
            self.save()

    def record(self, service: str, stage: str, result: dict[str, Any]) -> None:
        """Record a stage's result for one service (replaces the previous one)."""
        if stage not in STAGE_REGISTRY and stage not in ARTIFACT_RECORDS:
            raise ValueError(f"unknown record {stage}")
        if "status" not in result:
            raise ValueError("a stage result needs a status")
        with self._lock:
            self._data["services"].setdefault(service, {})[stage] = {**result, "at": now_iso()}
            self.save()

    def record_infra(self, name: str, stage: str, result: dict[str, Any]) -> None:
        """Record a stage's result for one infra image ([infra.NAME]: PostgreSQL, Redis, NATS) under `infra`."""
        if "status" not in result:
            raise ValueError("a stage result needs a status")
        with self._lock:
            self._data.setdefault("infra", {}).setdefault(name, {})[stage] = {**result, "at": now_iso()}
            self.save()

    def infra_result(self, name: str, stage: str) -> dict[str, Any] | None:
        with self._lock:
            res = self._data.get("infra", {}).get(name, {}).get(stage)
            return copy.deepcopy(res) if res is not None else None

    def record_stage(self, stage: str, result: dict[str, Any]) -> None:
        """Record a whole stage's summary (status, timings). Only the runner calls this."""
        with self._lock:
            self._data["stages"][stage] = {**result, "at": now_iso()}
            self.save()

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self.save()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group several mutations into one save (one write and fsync instead of one each), done when the
        block ends, also on an error. A crash inside the block loses only the block's mutations."""
        with self._lock:
            self._batch_depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._batch_depth -= 1
                if self._batch_depth == 0 and self._unsaved:
                    self.save()

    def save(self) -> None:
        with self._lock:
            if self._batch_depth:
                self._unsaved = True
                return
            self._unsaved = False
            self._data["updated"] = now_iso()
            atomic_write(self.path, redact(json.dumps(self._data, indent=2, sort_keys=True)) + "\n")
