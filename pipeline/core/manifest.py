"""The Release manifest: one JSON document per release, extended by every stage, written atomically.

Layout (schema: pipeline/core/schemas/manifest.schema.json, documented in README "Release manifest"):

    {
      "schema_version": 1,
      "release_id": "<env>-<short sha>[-dirty-<hash>]",
      "env": "local", "created": "...", "updated": "...",
      "version": {... Version facts ...},
      "stages": {"build": {"status": "ok", "services": [...], "run_id": "...", "duration_s": ..., ...}, ...},
      "services": {
        "veza-backend-api": {
          "repository": "127.0.0.1:5000/veza/veza-backend-api",
          "tags": ["sha-abc1234", "main"],
          "input_digest": "sha256:...",
          "build":  {"status": "built|reused|failed|cancelled", "image_id": "sha256:...", "duration_s": 1.2, ...},
          "scan":   {"status": "pass|blocked|error", "counts": {...}, "report": "...", "sbom": "..."},
          "smoke":  {"status": "pass|fail|not_run", "image": "...", "run_id": "..."},
          "push":   {"status": "pushed|skipped|failed", "digest": "sha256:...", "tags_pushed": [...]},
          "sbom":   {"status": "attached", "ref": "...", "subject": "sha256:..."},
          "signature": {"status": "signed", "ref": "...", "key": "sha256:..."}, "provenance": {"status": "attached"},
          "promotions": {"<target env>": {"status": "promoted|unchanged", "digest": "sha256:...", ...}},
          "migrate": {"status": "migrated|current|failed", "schema_version": 2, "latest": 2, "applied": [2], ...},
          "deploy": {"status": "deployed|noop|rolled_back|failed", "revision": 3, "image": "repo@sha256:..."}
        }
      },
      "infra": {"<infra name>": {"scan": {...}, "push": {..., "source": {...}}, "sbom": {...}, "signature": {...},
                                 "provenance": {...}}}
    }

An infra image's records (pipeline/core/release_images.py) are those of a service under the subject
`infra/<name>` (`subject_slot`): `record("infra/postgres", "push", …)`, `pushed("infra/postgres")`.
Each service's stage records are written by that stage only, through `record()` (promotions through
`record_promotion()`), whose status must be a member of the record's enum (`RECORD_STATUS`, from
pipeline.core.vocab). Pipeline code reads them through the typed views, one frozen dataclass per record:
`built()`, `scanned()` (and `infra_scanned()`), `smoked()`, `pushed()` (and `pushed_images()`), `sbom()`,
`signed()`, `promotion()`, `migrated()`, `deployed()`; a recorded status outside the enum is a UsageError naming
the file, the service and the field. The runner alone writes `stages.<name>` (`record_stage()`) and reads it back as a
`StageRecord` (`stage()`, `stages()`). The raw JSON (`data`, `service()`, `stage_result()`, `infra_result()`)
is for inspection (tests, debugging); no stage reads it. One manifest per environment: `manifest_path(cfg, env)`.
Secrets never enter it: every string is redacted on save.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from pipeline.core.errors import UsageError
from pipeline.core.redact import redact
from pipeline.core.stage_registry import STAGE_REGISTRY
from pipeline.core.vocab import (
    AttachStatus,
    BuildStatus,
    DeployStatus,
    MigrateStatus,
    PromotionStatus,
    PushStatus,
    ScanStatus,
    SignStatus,
    SmokeStatus,
    StageStatus,
    VerifyStatus,
    now_iso,
)

SCHEMA_VERSION = 1
# Per-service record slots: one per stage (pipeline/core/stage_registry.py), plus these trust artifacts the
# sign stage attaches to a pushed image.
ARTIFACT_RECORDS = ("signature", "provenance")
# The statuses each written record may hold (a record not listed here has no writer).
RECORD_STATUS: dict[str, type[StrEnum]] = {
    "build": BuildStatus, "scan": ScanStatus, "push": PushStatus, "smoke": SmokeStatus, "deploy": DeployStatus,
    "migrate": MigrateStatus, "verify": VerifyStatus,
    "sbom": AttachStatus, "signature": SignStatus, "provenance": AttachStatus}
# The command that writes a record again (the hint of an unreadable one).
_REWRITER = {"sbom": "push", "signature": "sign", "provenance": "sign", "promotions": "promote"}
# The keys of `stages.<name>` that StageRecord types; the rest are the stage's own summary fields.
_STAGE_KEYS = frozenset({"status", "services", "run_id", "detail", "error", "exit_code", "duration_s", "at"})
E = TypeVar("E", bound=StrEnum)


# A record subject is a service name, or `infra/<name>` for an [infra.NAME] image (recorded under `infra.<name>`):
# the typed views and record() take either, so push, sign and verify treat every image the release runs alike.
INFRA_PREFIX = "infra/"


def subject_slot(subject: str) -> tuple[str, str]:
    """Where a subject's records live: ("services", name) or ("infra", name) for `infra/<name>`."""
    if subject.startswith(INFRA_PREFIX):
        return "infra", subject[len(INFRA_PREFIX):]
    return "services", subject


def manifest_path(state_dir: Path, env_name: str) -> Path:
    """`<state_dir>/<env>/manifest.json`: each environment has its own record; releases never share one."""
    return state_dir / env_name / "manifest.json"


def _strmap(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _opt(raw: Any) -> str | None:
    return str(raw) if raw not in (None, "") else None


@dataclass(frozen=True)
class Identity:
    """What the build planned for a service (`services.<name>`: repository, tags, input digest), before any
    stage result; None where nothing is recorded."""

    service: str
    repository: str | None
    tags: tuple[str, ...] | None
    input_digest: str | None


@dataclass(frozen=True)
class BuildOrigin:
    """The build that made an image (for a reused image: the earlier build, read from the image's labels).

    commit: full git SHA the image was built from; run_id: that build's run; started_on/finished_on: UTC RFC 3339
    ("" when unknown); builder: buildx | buildkit | legacy; builder_version: the docker CLI's version;
    engine_version: the Docker engine's version; dirty: that tree had uncommitted changes.
    """

    commit: str
    run_id: str
    started_on: str
    finished_on: str
    builder: str
    builder_version: str
    engine_version: str
    dirty: bool = False


@dataclass(frozen=True)
class Reuse:
    """A run that reused an image by input digest instead of building it: its run id, commit and time (RFC 3339),
    and where the image was found: `registry_image` = "repository@sha256:…" when the environment's registry held
    it (the engine then has no copy until a stage pulls it), "" when the local engine did."""

    run_id: str
    commit: str
    at: str
    registry_image: str = ""


def _origin(raw: Any) -> BuildOrigin | None:
    if not isinstance(raw, dict) or not raw.get("commit"):
        return None
    def text(key: str) -> str:
        return str(raw.get(key) or "")

    return BuildOrigin(text("commit"), text("run_id"), text("started_on"), text("finished_on"), text("builder"),
                       text("builder_version"), text("engine_version"), dirty=text("dirty").lower() == "true")


def _reuse(raw: Any) -> Reuse | None:
    if not isinstance(raw, dict) or not raw.get("run_id") and not raw.get("commit"):
        return None
    return Reuse(str(raw.get("run_id") or ""), str(raw.get("commit") or ""), str(raw.get("at") or ""),
                 str(raw.get("registry_image") or ""))


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
    build_args: Mapping[str, str] = field(default_factory=dict)        # content-shaping args (for provenance)
    base_images: Mapping[str, str] = field(default_factory=dict)       # base reference → image ID
    log: str | None = None
    origin: BuildOrigin | None = None      # the build that made the image; None in records before it was kept
    reuse: Reuse | None = None             # status reused: the run that reused it
    dockerfile_digest: str = ""            # "sha256:<hex>" of the Dockerfile's bytes at build time
    context_digest: str = ""               # "sha256:<hex>" of the context's file list (path → mode:sha256)

    @property
    def ok(self) -> bool:
        return self.status in (BuildStatus.BUILT, BuildStatus.REUSED) and bool(self.image_id)

    @property
    def registry_image(self) -> str:
        """"repository@sha256:…" when the image was reused from the registry (not in this engine unless pulled),
        else ""."""
        return self.reuse.registry_image if self.reuse is not None else ""

    @property
    def local_ref(self) -> str:
        """`repository:first-tag`, as the build tagged it in the local engine."""
        return f"{self.repository}:{self.tags[0]}" if self.tags else self.repository


@dataclass(frozen=True)
class Scanned:
    """A scan record: a service's (`services.<name>.scan`) or an infra image's (`infra.<name>.scan`)."""

    name: str
    status: ScanStatus
    image_id: str | None
    report: str | None                      # Trivy's JSON report
    sbom: str | None                        # the CycloneDX SBOM file the scan wrote
    counts: Mapping[str, int] | None = None   # severity → findings; None when the scan gave none (an error)
    threshold: str | None = None
    ref: str | None = None                  # infra images: the image reference scanned

    @property
    def passed(self) -> bool:
        return self.status is ScanStatus.PASS


@dataclass(frozen=True)
class CheckResult:
    """One functional check or probe as a record keeps it (`checks`: smoke, deploy, verify): its name, its verdict,
    and for a failed one what was expected and what it got."""

    name: str
    ok: bool
    got: str = ""
    expected: str = ""


def _checks(rec: Mapping[str, Any]) -> tuple[CheckResult, ...]:
    return tuple(CheckResult(str(c.get("name") or ""), bool(c.get("ok")), str(c.get("got") or ""),
                             str(c.get("expected") or "")) for c in rec.get("checks") or () if isinstance(c, dict))


@dataclass(frozen=True)
class Smoked:
    """A service's smoke record: the image compose ran and the verdict of its checks."""

    service: str
    status: SmokeStatus
    image: str
    run_id: str
    checks: tuple[CheckResult, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status is SmokeStatus.PASS


@dataclass(frozen=True)
class Pushed:
    """A service's push record: the registry digest every later stage deploys by."""

    status: PushStatus
    repository: str                         # where the push went (the record's own; older ones: the service's)
    digest: str | None
    tags: tuple[str, ...]
    children: Mapping[str, str] = field(default_factory=dict)   # multi-platform: platform → child digest
    image_id: str | None = None             # the local image pushed
    platform_images: Mapping[str, str] = field(default_factory=dict)   # multi-platform: platform → image ID
    retries: int = 0
    source: Mapping[str, str] = field(default_factory=dict)   # an infra image: the local image it was pushed from
                                                              # (ref, recipe_digest, run_id, created, pulled_from)

    @property
    def ok(self) -> bool:
        """Pushed (or already there) with a sha256 digest and a repository: deployable by digest."""
        return (self.status in (PushStatus.PUSHED, PushStatus.SKIPPED) and bool(self.repository)
                and str(self.digest or "").startswith("sha256:"))

    @property
    def ref(self) -> str:
        """`repository@sha256:…` (OCI reference by digest)."""
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class SbomAttached:
    """A service's `sbom` record: the SBOM artifact attached to its pushed digest."""

    service: str
    status: AttachStatus
    ref: str                                # repository:tag of the artifact
    digest: str | None                      # the artifact manifest's digest
    subject: str                            # the image digest it refers to
    children: Mapping[str, str] = field(default_factory=dict)   # multi-platform: platform → artifact ref


@dataclass(frozen=True)
class Signed:
    """A service's `signature` record: its pushed digest signed by the environment's key."""

    service: str
    status: SignStatus
    ref: str                                # repository:tag of the signature
    subject: str                            # the signed digest
    key: str                                # sha256 of the public key (pipeline.stages.sign.key_id)
    vex: str | None = None                  # the attached OpenVEX document's reference, when one was attached
    children: Mapping[str, str] = field(default_factory=dict)   # multi-platform: platform → signature ref


@dataclass(frozen=True)
class Promotion:
    """One promotion of a service to another environment (`services.<name>.promotions.<env>`)."""

    service: str
    env: str
    status: PromotionStatus
    digest: str
    repository: str                         # the target's repository
    source: str                             # repository@digest it was copied from
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Deployed:
    """A service's deploy record."""

    status: DeployStatus
    revision: int | None
    digest: str | None
    image: str | None = None                # repository@digest deployed (older records carry no `digest`)
    service: str = ""
    checks: tuple[CheckResult, ...] = ()    # the deploy's verification: its functional checks


    @property
    def serving(self) -> bool:
        """Deployed or already deployed (noop): the release runs this image."""
        return self.status in (DeployStatus.DEPLOYED, DeployStatus.NOOP)


@dataclass(frozen=True)
class Verified:
    """A service's verify record (`invoke verify`): the verdict, the revision verified and its functional checks."""

    status: VerifyStatus
    revision: int | None
    run_id: str
    checks: tuple[CheckResult, ...] = ()


@dataclass(frozen=True)
class Migrated:
    """A service's migrate record: the schema version the migrator left (failed: the last good one)."""

    status: MigrateStatus
    schema_version: int | None
    digest: str
    log: str
    log_tail: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageRecord:
    """The runner's record of a whole stage (`stages.<name>`)."""

    name: str
    status: StageStatus
    services: tuple[str, ...]               # the services the run selected
    run_id: str
    detail: str                             # ok/skipped: the summary line
    error: str                              # failed/blocked/interrupted: the one-line error
    exit_code: int
    duration_s: float
    fields: Mapping[str, Any] = field(default_factory=dict)   # the stage's own summary fields (StageSummary.fields)

    @property
    def ok(self) -> bool:
        return self.status is StageStatus.OK

    def covers(self, services: Sequence[str]) -> bool:
        """Recorded ok for (at least) these services."""
        return self.ok and set(services) <= set(self.services)


def _written_status(kind: type[StrEnum] | None, result: Mapping[str, Any], where: str) -> str:
    """The status a writer gives, checked against its record's enum: a word outside it is a programming error
    (ValueError naming the field), never a record the readers would refuse later."""
    if "status" not in result:
        raise ValueError(f"{where}: a stage result needs a status")
    if kind is None:
        return str(result["status"])
    try:
        return str(kind(result["status"]))
    except ValueError:
        raise ValueError(f"{where}.status {result['status']!r} is not one of {', '.join(map(str, kind))}") from None


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
        """The raw document, a deep copy (for inspection: tests, debugging; pipeline code reads the views)."""
        with self._lock:
            return copy.deepcopy(self._data)

    @property
    def env(self) -> str:
        return str(self._data["env"])

    @property
    def release_id(self) -> str:
        return str(self._data["release_id"])

    @property
    def created(self) -> str:
        return str(self._data.get("created") or "")

    def version_facts(self) -> dict[str, Any]:
        """The release's version facts as recorded (pipeline.versioning.version.Version.to_dict's shape), a copy."""
        with self._lock:
            return copy.deepcopy(dict(self._data.get("version") or {}))

    @property
    def commit(self) -> str:
        """The release's git commit (`version.sha`); "" when none is recorded."""
        with self._lock:
            return str((self._data.get("version") or {}).get("sha") or "")

    def services(self) -> list[str]:
        with self._lock:
            return list(self._data["services"])

    def service(self, name: str) -> dict[str, Any]:
        """A service's raw entry (for inspection). UsageError when the service is not recorded."""
        with self._lock:
            if name not in self._data["services"]:
                raise UsageError(f"service '{name}' is not in the Release manifest {self.path}",
                                 "run `invoke build` for it first")
            return copy.deepcopy(self._data["services"][name])

    def stage_result(self, service: str, stage: str) -> dict[str, Any] | None:
        """A service's raw record (for inspection), or None."""
        with self._lock:
            res = self._data["services"].get(service, {}).get(stage)
            return copy.deepcopy(res) if res is not None else None

    def _rec(self, service: str, stage: str) -> dict[str, Any]:
        return self._svc_field(service, stage) or {}

    def _svc_field(self, service: str, key: str) -> Any:
        top, name = subject_slot(service)
        with self._lock:
            return copy.deepcopy((self._data.get(top) or {}).get(name, {}).get(key))

    def _status(self, kind: type[E], rec: Mapping[str, Any], where: str, writer: str) -> E:
        """rec["status"] as a member of `kind`; UsageError naming the file and the field otherwise (a record
        written by hand, or by a pipeline version with other words)."""
        value = rec.get("status")
        try:
            return kind(str(value))
        except ValueError:
            raise UsageError(f"{self.path}: {where}.status is {value!r}, not one of {', '.join(map(str, kind))}",
                             f"rerun `invoke {writer} --env {self.env}` to record it again, "
                             f"or delete {self.path} and rerun the release") from None

    def _service_status(self, kind: type[E], service: str, slot: str, rec: Mapping[str, Any]) -> E:
        top, name = subject_slot(service)
        return self._status(kind, rec, f"{top}.{name}.{slot}", _REWRITER.get(slot, slot))

    def identity(self, service: str) -> Identity:
        """The service's planned repository, tags and input digest (None each where not recorded)."""
        repo, tags, digest = (self._svc_field(service, k) for k in ("repository", "tags", "input_digest"))
        return Identity(service, str(repo) if repo is not None else None,
                        tuple(str(t) for t in tags) if isinstance(tags, list) else None,
                        str(digest) if digest is not None else None)

    def built(self, service: str) -> Built | None:
        """The build record of a service, or None when it was never built in this release."""
        rec = self._rec(service, "build")
        if not rec:
            return None
        ident = self.identity(service)
        return Built(service, self._service_status(BuildStatus, service, "build", rec), _opt(rec.get("image_id")),
                     ident.repository or "", ident.tags or (), ident.input_digest or "",
                     _strmap(rec.get("platforms")), _strmap(rec.get("build_args")), _strmap(rec.get("base_images")),
                     _opt(rec.get("log")), _origin(rec.get("origin")), _reuse(rec.get("reuse")),
                     str(rec.get("dockerfile_digest") or ""), str(rec.get("context_digest") or ""))

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

    def _scanned(self, name: str, rec: dict[str, Any], where: str) -> Scanned | None:
        if not rec:
            return None
        counts = rec.get("counts")
        return Scanned(name, self._status(ScanStatus, rec, where, "scan"), _opt(rec.get("image_id")),
                       _opt(rec.get("report")), _opt(rec.get("sbom")),
                       {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else None,
                       _opt(rec.get("threshold")), _opt(rec.get("ref")))

    def scanned(self, service: str) -> Scanned | None:
        """The scan record of a service, or None when it was never scanned in this release."""
        return self._scanned(service, self._rec(service, "scan"), f"services.{service}.scan")

    def infra_names(self) -> list[str]:
        """The infra images ([infra.NAME]) with a record."""
        with self._lock:
            return list(self._data.get("infra") or {})

    def infra_scanned(self, name: str) -> Scanned | None:
        """The scan record of an infra image ([infra.NAME]), or None."""
        return self._scanned(name, self.infra_result(name, "scan") or {}, f"infra.{name}.scan")

    def smoked(self, service: str) -> Smoked | None:
        """The smoke record of a service, or None when no smoke test ran it in this release."""
        rec = self._rec(service, "smoke")
        if not rec:
            return None
        return Smoked(service, self._service_status(SmokeStatus, service, "smoke", rec), str(rec.get("image") or ""),
                      str(rec.get("run_id") or ""), _checks(rec))

    def pushed(self, service: str) -> Pushed | None:
        """The push record of a service, or None when it was never pushed in this release."""
        rec = self._rec(service, "push")
        if not rec:
            return None
        repo = str(rec.get("repository") or self._svc_field(service, "repository") or "")
        return Pushed(self._service_status(PushStatus, service, "push", rec), repo, _opt(rec.get("digest")),
                      tuple(rec.get("tags_pushed") or rec.get("tags") or ()), _strmap(rec.get("children")),
                      _opt(rec.get("image_id")), _strmap(rec.get("platform_images")), int(rec.get("retries") or 0),
                      _strmap(rec.get("source")))

    def pushed_images(self) -> dict[str, Pushed]:
        """service → its push record, for every service pushed ok (deployable by digest)."""
        return {name: p for name in self.services() if (p := self.pushed(name)) is not None and p.ok}

    def sbom(self, service: str) -> SbomAttached | None:
        """The SBOM attached to a service's pushed digest, or None."""
        rec = self._rec(service, "sbom")
        if not rec:
            return None
        status = self._service_status(AttachStatus, service, "sbom", rec)
        return SbomAttached(service, status, str(rec.get("ref") or ""), _opt(rec.get("digest")),
                            str(rec.get("subject") or ""), _strmap(rec.get("children")))

    def signed(self, service: str) -> Signed | None:
        """The signature record of a service, or None when its digest was not signed in this release."""
        rec = self._rec(service, "signature")
        if not rec:
            return None
        status = self._service_status(SignStatus, service, "signature", rec)
        return Signed(service, status, str(rec.get("ref") or ""), str(rec.get("subject") or ""),
                      str(rec.get("key") or ""), _opt(rec.get("vex")), _strmap(rec.get("children")))

    def promotion(self, service: str, env: str) -> Promotion | None:
        """The last promotion of a service to `env`, or None."""
        rec = (self._svc_field(service, "promotions") or {}).get(env) or {}
        if not rec:
            return None
        status = self._status(PromotionStatus, rec, f"services.{service}.promotions.{env}", "promote")
        return Promotion(service, env, status, str(rec.get("digest") or ""), str(rec.get("repository") or ""),
                         str(rec.get("source") or ""), tuple(rec.get("tags") or ()))

    def migrated(self, service: str) -> Migrated | None:
        """The migrate record of a service, or None when its migrator never ran in this release."""
        rec = self._rec(service, "migrate")
        if not rec:
            return None
        v = rec.get("schema_version")
        return Migrated(self._service_status(MigrateStatus, service, "migrate", rec),
                        int(v) if v is not None else None, str(rec.get("digest") or ""), str(rec.get("log") or ""),
                        tuple(str(x) for x in rec.get("log_tail") or ()))

    def deployed(self, service: str) -> Deployed | None:
        """The deploy record of a service, or None when it was never deployed in this release."""
        rec = self._rec(service, "deploy")
        if not rec:
            return None
        revision = rec.get("revision")
        return Deployed(self._service_status(DeployStatus, service, "deploy", rec),
                        int(revision) if revision is not None else None, _opt(rec.get("digest")),
                        _opt(rec.get("image")), service, _checks(rec))

    def verified(self, service: str) -> Verified | None:
        """The verify record of a service, or None when `invoke verify` never ran on this release."""
        rec = self._rec(service, "verify")
        if not rec:
            return None
        revision = rec.get("revision")
        return Verified(self._service_status(VerifyStatus, service, "verify", rec),
                        int(revision) if revision is not None else None, str(rec.get("run_id") or ""), _checks(rec))

    def stage(self, name: str) -> StageRecord | None:
        """The runner's record of a whole stage (`stages.<name>`), or None."""
        with self._lock:
            rec = copy.deepcopy(self._data["stages"].get(name))
        if rec is None:
            return None
        return StageRecord(name, self._status(StageStatus, rec, f"stages.{name}", name),
                           tuple(str(s) for s in rec.get("services") or ()), str(rec.get("run_id") or ""),
                           str(rec.get("detail") or ""), str(rec.get("error") or ""), int(rec.get("exit_code") or 0),
                           float(rec.get("duration_s") or 0.0),
                           {k: v for k, v in rec.items() if k not in _STAGE_KEYS})

    def stages(self) -> dict[str, StageRecord]:
        """Every recorded stage, in the order first recorded."""
        with self._lock:
            names = list(self._data["stages"])
        return {n: rec for n in names if (rec := self.stage(n)) is not None}

    # -- writing (each saves)
    def set_service(self, name: str, **fields: Any) -> None:
        with self._lock:
            self._data["services"].setdefault(name, {}).update(fields)
            self.save()

    def record(self, service: str, stage: str, result: dict[str, Any]) -> None:
        """Record a stage's result for one service (replaces the previous one)."""
        if stage not in STAGE_REGISTRY and stage not in ARTIFACT_RECORDS:
            raise ValueError(f"unknown record {stage}")
        top, name = subject_slot(service)
        status = _written_status(RECORD_STATUS.get(stage), result, f"{top}.{name}.{stage}")
        with self._lock:
            self._data.setdefault(top, {}).setdefault(name, {})[stage] = {**result, "status": status,
                                                                         "at": now_iso()}
            self.save()

    def record_promotion(self, service: str, env: str, result: dict[str, Any]) -> None:
        """Record a promotion of a service to `env` (`services.<name>.promotions.<env>`, replaces the previous)."""
        status = _written_status(PromotionStatus, result, f"services.{service}.promotions.{env}")
        with self._lock:
            entry = self._data["services"].setdefault(service, {})
            entry.setdefault("promotions", {})[env] = {**result, "status": status}
            self.save()

    def record_infra(self, name: str, stage: str, result: dict[str, Any]) -> None:
        """Record a stage's result for one infra image ([infra.NAME]: PostgreSQL, Redis, NATS) under `infra`."""
        status = _written_status(RECORD_STATUS.get(stage), result, f"infra.{name}.{stage}")
        with self._lock:
            self._data.setdefault("infra", {}).setdefault(name, {})[stage] = {**result, "status": status,
                                                                               "at": now_iso()}
            self.save()

    def infra_result(self, name: str, stage: str) -> dict[str, Any] | None:
        """An infra image's raw record (for inspection), or None."""
        with self._lock:
            res = self._data.get("infra", {}).get(name, {}).get(stage)
            return copy.deepcopy(res) if res is not None else None

    def record_stage(self, stage: str, result: dict[str, Any]) -> None:
        """Record a whole stage's summary (status, timings). Only the runner calls this."""
        status = _written_status(StageStatus, result, f"stages.{stage}")
        with self._lock:
            self._data["stages"][stage] = {**result, "status": status, "at": now_iso()}
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
