"""Build, package and publish a Trivy vulnerability DB offline: a mirror for air-gapped scans.

Trivy reads its DB (a BoltDB file + metadata.json) from an OCI artifact in any registry. Enterprises
mirror it; tests need a small but real one. This module writes it from an advisories file:

    advisories:
      - id: CVE-2023-45853
        source: debian 12              # Trivy's bucket: "<os> <major>" or "<eco>::<data source>"
        package: zlib                  # OS advisories: the SOURCE package name (glibc, not libc6)
        fixed: ""                      # omit when there is no fix ...
        status: will_not_fix           # ... and say why (affected, will_not_fix, fix_deferred, ...)
        severity: CRITICAL
        origin: https://security-tracker.debian.org/tracker/CVE-2023-45853   # where the record comes from
        date: 2025-07-21               # the date of that record
      - id: CVE-2025-22871
        source: "go::The Go Vulnerability Database"
        package: stdlib                # Go binaries: Trivy reads the toolchain version from the build info
        vendor_ids: [GO-2025-3563]
        vulnerable: [">=0.0.0-0, <1.23.8", ">=1.24.0-0, <1.24.2"]   # language ecosystems: version ranges
        patched: ["1.23.8", "1.24.2"]
        severity: MEDIUM

The BoltDB is written by a tiny Go program (writer.go, GOPATH mode + Debian's bbolt), packaged as
db.tar.gz (trivy.db and metadata.json at the root) and pushed with the ORAS client under Trivy's media
types, as `<repository>:2` (Trivy appends the schema version tag when given a bare repository).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.core.config import Config
from pipeline.core.errors import StageFailed, UsageError
from pipeline.core.paths import CACHE_DIR
from pipeline.core.vocab import SEVERITIES
from pipeline.tools import golang
from pipeline.tools.registry_answers import digest_of

WRITER_SOURCE = Path(__file__).with_name("writer.go")
DB_SCHEMA_VERSION = 2
LAYER_MEDIA_TYPE = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.aquasec.trivy.config.v1+json"
SEED_ANNOTATION = "dev.veza.pipeline.trivydb.seed"   # on a DB built here from an advisories file: its sha256
IMPORT_ANNOTATION = "dev.veza.pipeline.trivydb.imported"   # on an imported bundle (`--import`): its sha256
# Trivy's numeric vendor severities: 0 unknown .. 4 critical
VENDOR_SEVERITY = {s: i for i, s in enumerate(SEVERITIES)}
DATA_SOURCES = {
    "debian": ("debian", "Debian Security Tracker", "https://salsa.debian.org/security-tracker-team/security-tracker"),
    "ghsa": ("ghsa", "GitHub Security Advisory", "https://github.com/advisories"),
    "govulndb": ("govulndb", "The Go Vulnerability Database", "https://pkg.go.dev/vuln/"),
}
# trivy-db's status enum (pkg/types/status.go): the index is what the DB stores
STATUSES = ("unknown", "not_affected", "affected", "fixed", "under_investigation", "will_not_fix", "fix_deferred",
            "end_of_life")
KEYS = {"id", "source", "package", "severity", "fixed", "status", "vulnerable", "patched", "vendor_ids", "title",
        "description", "references", "origin", "date", "severity_source"}


@dataclass(frozen=True)
class Advisory:
    id: str
    source: str
    package: str
    severity: str = "HIGH"
    fixed: str = ""
    vulnerable: tuple[str, ...] = ()
    patched: tuple[str, ...] = ()
    title: str = ""
    description: str = ""
    references: tuple[str, ...] = field(default=())
    status: str = ""               # OS advisories without a fix: affected, will_not_fix, fix_deferred, ...
    vendor_ids: tuple[str, ...] = ()   # the data source's own IDs (GO-2025-3563 for a CVE of the Go database)
    origin: str = ""               # where this record comes from (an advisory URL)
    date: str = ""                 # the date of that record (YYYY-MM-DD)
    severity_source: str = ""      # who rated the severity (debian, nvd, ...): Trivy's SeveritySource

    @property
    def vendor(self) -> str:
        """Trivy's data-source ID for the advisory's bucket (debian, govulndb, ghsa, ...)."""
        if "::" in self.source:
            _, ds = self.source.split("::", 1)
            return "govulndb" if "Go Vulnerability" in ds else "ghsa"
        return self.source.split()[0]


def parse_advisories(data: Any, source: str = "advisories") -> list[Advisory]:
    items = data.get("advisories") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise UsageError(f"{source}: expected a non-empty list under 'advisories:'",
                         "write: advisories: [{id, source, package, fixed|vulnerable, severity}]")
    out = []
    for i, raw in enumerate(items):
        where = f"{source}: advisory {i + 1}"
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: not a mapping", "write each advisory as a mapping")
        missing = [k for k in ("id", "source", "package") if not raw.get(k)]
        if missing:
            raise UsageError(f"{where}: missing {', '.join(missing)}", "every advisory needs id, source and package")
        sev = str(raw.get("severity", "HIGH")).upper()
        if sev not in VENDOR_SEVERITY:
            raise UsageError(f"{where}: unknown severity '{sev}'", f"use one of: {', '.join(SEVERITIES)}")
        unknown = set(raw) - KEYS
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                             f"allowed: {', '.join(sorted(KEYS))}")
        status = str(raw.get("status") or "")
        if status and status not in STATUSES:
            raise UsageError(f"{where}: unknown status '{status}'", f"use one of: {', '.join(STATUSES)}")
        out.append(Advisory(
            id=str(raw["id"]), source=str(raw["source"]), package=str(raw["package"]), severity=sev,
            fixed=str(raw.get("fixed") or ""), vulnerable=tuple(map(str, raw.get("vulnerable") or ())),
            patched=tuple(map(str, raw.get("patched") or ())), title=str(raw.get("title") or ""),
            description=str(raw.get("description") or ""), references=tuple(map(str, raw.get("references") or ())),
            status=status, vendor_ids=tuple(map(str, raw.get("vendor_ids") or ())),
            origin=str(raw.get("origin") or ""), date=str(raw.get("date") or ""),
            severity_source=str(raw.get("severity_source") or ""),
        ))
    return out


def load_advisories(path: Path) -> list[Advisory]:
    from pipeline.core.yamlfile import load_text

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"advisories file not found: {path}", "pass an existing YAML file") from None
    return parse_advisories(load_text(text, str(path)), str(path))


def db_entries(advisories: Iterable[Advisory]) -> list[dict[str, Any]]:
    """The key/value entries of trivy.db, in Trivy's bucket layout."""
    entries: list[dict[str, Any]] = [{"path": ["vulnerability"], "key": ""}]   # must exist, or Trivy panics
    sources: set[str] = set()
    for a in advisories:
        if "::" in a.source:
            value: dict[str, Any] = {"VulnerableVersions": list(a.vulnerable), "PatchedVersions": list(a.patched)}
        else:
            value = {"FixedVersion": a.fixed} if a.fixed else {}
        if a.status:
            value["Status"] = STATUSES.index(a.status)
        if a.vendor_ids:
            value["VendorIDs"] = list(a.vendor_ids)
        entries.append({"path": [a.source, a.package], "key": a.id, "value": value})
        vuln: dict[str, Any] = {"Title": a.title or f"{a.id} in {a.package}", "Description": a.description,
                                "Severity": a.severity}
        if a.severity_source:   # else Trivy reports Severity with no vendor (as for most Go stdlib entries)
            vuln["VendorSeverity"] = {a.severity_source: VENDOR_SEVERITY[a.severity]}
        refs = [*([a.origin] if a.origin else []), *a.references]
        if refs:
            vuln["References"] = refs

        entries.append({"path": ["vulnerability"], "key": a.id, "value": vuln})
        if a.source not in sources:
            sources.add(a.source)
            ident, name, url = DATA_SOURCES.get(a.vendor, (a.vendor, a.vendor, ""))
            entries.append({"path": ["data-source"], "key": a.source, "value": {"ID": ident, "Name": name, "URL": url}})
    return entries


def writer_binary() -> Path:
    """The compiled writer, cached by the hash of its source (built once per machine, ~1 s)."""
    digest = hashlib.sha256(WRITER_SOURCE.read_bytes()).hexdigest()[:12]
    exe = CACHE_DIR / "trivy" / "bin" / f"trivydb-writer-{digest}"
    if not exe.exists():
        golang.build_gopath(WRITER_SOURCE, exe, needs=("go.etcd.io/bbolt",), apt="golang-github-coreos-bbolt-dev")
    return exe


def build_db(advisories: Sequence[Advisory], out_dir: Path, *, now: datetime | None = None,
             valid_for: timedelta = timedelta(days=1)) -> Path:
    """Write out_dir/trivy.db and out_dir/metadata.json; returns out_dir."""
    if not advisories:
        raise UsageError("no advisories to write", "give at least one advisory")
    out_dir.mkdir(parents=True, exist_ok=True)
    golang.run_program(writer_binary(), [str(out_dir / "trivy.db")], input=json.dumps(db_entries(advisories)))
    now = now or datetime.now(UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    meta = {"Version": DB_SCHEMA_VERSION, "NextUpdate": (now + valid_for).strftime(fmt),
            "UpdatedAt": now.strftime(fmt), "DownloadedAt": now.strftime(fmt)}
    (out_dir / "metadata.json").write_text(json.dumps(meta))
    return out_dir


def package_db(db_dir: Path, out: Path) -> Path:
    """db.tar.gz with trivy.db and metadata.json at the root (what Trivy expects in the artifact layer)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for name in ("trivy.db", "metadata.json"):
            tar.add(db_dir / name, arcname=name)
    return out


def push_db(archive: Path, repository: str, *, insecure: bool = True, username: str = "", password: str = "",
            annotations: dict[str, str] | None = None) -> str:
    """Push db.tar.gz as Trivy's OCI artifact to `repository` (host:port/path[:tag], default tag 2).

    `annotations` go on the artifact's manifest (a seed built here says so: SEED_ANNOTATION).
    """
    host, _, rest = repository.partition("/")
    if not rest:
        raise UsageError(f"'{repository}' is not a repository reference",
                         "write HOST:PORT/PATH, e.g. 127.0.0.1:5000/trivy/db")
    target = repository if ":" in rest.rsplit("/", 1)[-1] else f"{repository}:{DB_SCHEMA_VERSION}"
    import oras.client

    from pipeline.core.errors import RegistryAuthError
    from pipeline.tools.registry_api import Credentials, RegistryClient, RegistryUnavailable
    from pipeline.tools.registry_errors import classify_response, classify_text

    # Preflight: a refused login (or a registry that is down) fails here in a second, with the pipeline's
    # own error, instead of after the ORAS client's minutes of retries.
    RegistryClient(host, credentials=Credentials(username, password) if username and password else None,
                   timeout=10).check_push_access(rest.rsplit(":", 1)[0] if ":" in rest.rsplit("/", 1)[-1] else rest)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text("{}")
        layer = Path(tmp) / "db.tar.gz"
        layer.write_bytes(archive.read_bytes())
        # Basic auth (or none): the token backend would take the registry's Basic realm for a token
        # service, and retry it for minutes before failing.
        client = oras.client.OrasClient(hostname=host, insecure=insecure, auth_backend="basic")
        if username and password:
            client.auth.set_basic_auth(username, password)   # in memory: no docker config written
        try:
            resp = client.push(target=target, files=[f"{layer}:{LAYER_MEDIA_TYPE}"],
                               manifest_config=f"{cfg}:{CONFIG_MEDIA_TYPE}", disable_path_validation=True,
                               manifest_annotations=annotations or None, quiet=True)
        except Exception as exc:  # oras raises plain exceptions and requests errors alike
            why = "connection refused" if "Connection refused" in str(exc) else str(exc).splitlines()[0][:200]
            failure = classify_text(str(exc))
            if failure.kind == "auth":
                raise RegistryAuthError(f"the registry refused the Trivy DB push to {target}: {why}",
                                        "check the registry credentials") from None
            error = RegistryUnavailable if failure.kind == "transient" else StageFailed
            raise error(f"cannot push the Trivy DB to {target}: {why}",
                        "is the registry up? (`invoke registry-up`)") from None
    if resp.status_code not in (200, 201):
        headers = {k.lower(): v for k, v in resp.headers.items()}
        failure = classify_response(resp.status_code, resp.content or b"", headers)
        error = RegistryUnavailable if failure.kind == "transient" else StageFailed
        raise error(f"pushing the Trivy DB to {target} answered HTTP {resp.status_code} {failure.detail}".strip())
    return target


def seed_digest(advisories_file: Path) -> str:
    """sha256 of an advisories file: marks a mirror seeded from exactly this content (SEED_ANNOTATION)."""
    return digest_of(advisories_file.read_bytes())


def make_mirror(advisories_file: Path, push: str = "", out: Path | None = None, *, username: str = "",
                password: str = "", log: Callable[[str], None] = print) -> Path:
    """`invoke trivy-db --advisories F`: build a DB from an advisories file, write db.tar.gz, optionally push it.

    A pushed DB carries SEED_ANNOTATION = seed_digest(file), so the embedded mirror can tell an outdated seed
    (reseeded) from an imported real DB (left alone). Credentials of a private registry: username/password.
    """
    advisories = load_advisories(advisories_file)
    out = out or (CACHE_DIR / "trivy" / "mirror" / "db.tar.gz")
    with tempfile.TemporaryDirectory() as tmp:
        db_dir = build_db(advisories, Path(tmp) / "db")
        package_db(db_dir, out)
    log(f"Trivy DB with {len(advisories)} advisories written to {out}")
    if push:
        pushed = push_db(out, push, username=username, password=password,
                         annotations={SEED_ANNOTATION: seed_digest(advisories_file)})
        log(f"pushed to {pushed}")
    return out


def ensure_db_mirror(cfg: Config, say: Callable[[str], None]) -> None:
    """The embedded DB mirror (a loopback registry) is seeded from [scan].mirror_seed when it is empty or holds an
    older seed; an imported DB, or any mirror elsewhere, is left alone (pipeline.local.trivydb.seed)."""
    from pipeline.local.trivydb.seed import ensure_seeded

    ensure_seeded(cfg, lambda m: say(f"pre-flight: {m}"))
