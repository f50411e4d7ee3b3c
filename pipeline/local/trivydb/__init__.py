"""Build, package and publish a Trivy vulnerability DB offline: a mirror for air-gapped scans.

Trivy reads its DB (a BoltDB file + metadata.json) from an OCI artifact in any registry. Enterprises
mirror it; tests need a small but real one. This module writes it from an advisories file:

    advisories:
      - id: CVE-2099-0001
        source: debian 12              # Trivy's bucket: "<os> <major>" or "<eco>::<data source>"
        package: bash                  # OS advisories: the SOURCE package name (glibc, not libc6)
        fixed: 5.2.15-3                # omit when there is no fix
        severity: HIGH
        title: bash test advisory
      - id: GHSA-0000-0000-0001
        source: "npm::GitHub Security Advisory npm"
        package: lodash
        vulnerable: ["<4.17.21"]       # language ecosystems: version ranges
        patched: ["4.17.21"]
        severity: CRITICAL

The BoltDB is written by a tiny Go program (writer.go, GOPATH mode + Debian's bbolt), packaged as
db.tar.gz (trivy.db and metadata.json at the root) and pushed with the ORAS client under Trivy's media
types, as `<repository>:2` (Trivy appends the schema version tag when given a bare repository).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config import Config
from pipeline.core.errors import StageFailed, UsageError
from pipeline.core.paths import CACHE_DIR
from pipeline.core.vocab import SEVERITIES
from pipeline.tools import golang

WRITER_SOURCE = Path(__file__).with_name("writer.go")
DB_SCHEMA_VERSION = 2
LAYER_MEDIA_TYPE = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.aquasec.trivy.config.v1+json"
# Trivy's numeric vendor severities: 0 unknown .. 4 critical
VENDOR_SEVERITY = {s: i for i, s in enumerate(SEVERITIES)}
DATA_SOURCES = {
    "debian": ("debian", "Debian Security Tracker", "https://salsa.debian.org/security-tracker-team/security-tracker"),
    "ghsa": ("ghsa", "GitHub Security Advisory", "https://github.com/advisories"),
    "go": ("go", "The Go Vulnerability Database", "https://pkg.go.dev/vuln/"),
}


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

    @property
    def vendor(self) -> str:
        if "::" in self.source:
            eco, ds = self.source.split("::", 1)
            return "go" if "Go Vulnerability" in ds else "ghsa"
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
        unknown = set(raw) - {"id", "source", "package", "severity", "fixed", "vulnerable", "patched", "title",
                              "description", "references"}
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                             "allowed: id, source, package, severity, fixed, vulnerable, patched, title, ...")
        out.append(Advisory(
            id=str(raw["id"]), source=str(raw["source"]), package=str(raw["package"]), severity=sev,
            fixed=str(raw.get("fixed") or ""), vulnerable=tuple(map(str, raw.get("vulnerable") or ())),
            patched=tuple(map(str, raw.get("patched") or ())), title=str(raw.get("title") or ""),
            description=str(raw.get("description") or ""), references=tuple(map(str, raw.get("references") or ())),
        ))
    return out


def load_advisories(path: Path) -> list[Advisory]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"advisories file not found: {path}", "pass an existing YAML file") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}", "fix the YAML syntax") from None
    return parse_advisories(data, str(path))


def db_entries(advisories: Iterable[Advisory]) -> list[dict[str, Any]]:
    """The key/value entries of trivy.db, in Trivy's bucket layout."""
    entries: list[dict[str, Any]] = [{"path": ["vulnerability"], "key": ""}]   # must exist, or Trivy panics
    sources: set[str] = set()
    for a in advisories:
        if "::" in a.source:
            value: dict[str, Any] = {"VulnerableVersions": list(a.vulnerable), "PatchedVersions": list(a.patched)}
        else:
            value = {"FixedVersion": a.fixed} if a.fixed else {}
        entries.append({"path": [a.source, a.package], "key": a.id, "value": value})
        vuln: dict[str, Any] = {"Title": a.title or f"{a.id} in {a.package}", "Description": a.description,
                                "Severity": a.severity, "VendorSeverity": {a.vendor: VENDOR_SEVERITY[a.severity]}}
        if a.references:
            vuln["References"] = list(a.references)
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


def install_db(db_dir: Path, cache_dir: Path) -> None:
    """Put a built DB straight into a Trivy cache dir (offline use without a registry)."""
    target = cache_dir / "db"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("trivy.db", "metadata.json"):
        (target / name).write_bytes((db_dir / name).read_bytes())


def push_db(archive: Path, repository: str, *, insecure: bool = True, username: str = "", password: str = "") -> str:
    """Push db.tar.gz as Trivy's OCI artifact to `repository` (host:port/path[:tag], default tag 2)."""
    host, _, rest = repository.partition("/")
    if not rest:
        raise UsageError(f"'{repository}' is not a repository reference",
                         "write HOST:PORT/PATH, e.g. 127.0.0.1:5000/trivy/db")
    target = repository if ":" in rest.rsplit("/", 1)[-1] else f"{repository}:{DB_SCHEMA_VERSION}"
    import oras.client

    from pipeline.tools.registry_api import Credentials, RegistryClient

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
                               quiet=True)
        except Exception as exc:  # oras raises plain exceptions and requests errors alike
            why = "connection refused" if "Connection refused" in str(exc) else str(exc).splitlines()[0][:200]
            raise StageFailed(f"cannot push the Trivy DB to {target}: {why}",
                              "is the registry up? (`invoke registry-up`)") from exc
    if resp.status_code not in (200, 201):
        raise StageFailed(f"pushing the Trivy DB to {target} answered HTTP {resp.status_code}")
    return target


def make_mirror(advisories_file: Path, push: str = "", out: Path | None = None) -> Path:
    """`invoke trivy-db`: build a DB from an advisories file, write db.tar.gz, optionally push it."""
    advisories = load_advisories(advisories_file)
    out = out or (CACHE_DIR / "trivy" / "mirror" / "db.tar.gz")
    with tempfile.TemporaryDirectory() as tmp:
        db_dir = build_db(advisories, Path(tmp) / "db")
        package_db(db_dir, out)
    print(f"Trivy DB with {len(advisories)} advisories written to {out}")
    if push:
        from pipeline.core.config import load_config
        from pipeline.tools.credentials import resolve

        cfg = load_config(check_files=False)
        creds = resolve(push.split("/", 1)[0], cfg.registry.username_env, cfg.registry.password_env)
        pushed = push_db(out, push, username=creds.username if creds else "",
                         password=creds.password if creds else "")
        print(f"pushed to {pushed}")
    return out


def tar_members(archive: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive.read_bytes()), mode="r:gz") as tar:
        return tar.getnames()


def ensure_db_mirror(cfg: Config, say: Callable[[str], None]) -> None:
    """An empty embedded DB mirror (a loopback registry) is seeded from [scan].mirror_seed; any other is left alone."""
    repo = cfg.scan.db_repository
    if not repo or cfg.scan.mirror_seed is None or not repo.startswith(("127.0.0.1:", "localhost:")):
        return
    from pipeline.local.registry import ensure_local_registry
    from pipeline.tools.registry_api import RegistryClient, split_repository

    address, path = split_repository(repo)
    ensure_local_registry(cfg, address)
    if RegistryClient(address, timeout=10).head_manifest(path, "2") is not None:
        return
    say(f"pre-flight: the Trivy DB mirror {repo} is empty; seeding it from {cfg.scan.mirror_seed.name}")
    make_mirror(cfg.scan.mirror_seed, push=repo)
