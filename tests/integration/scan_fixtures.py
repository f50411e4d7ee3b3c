"""Fixtures of the scan/lint tests: tiny real images, a real offline Trivy DB served by a real registry.

Ports: 127.0.0.1:5200-5249 only. Every image is labelled veza.pipeline.run=<run id> and removed after.
Images are `docker import`s of small root filesystems (no pull is possible here): a Debian-looking one
(/etc/os-release + /var/lib/dpkg/status with bash 5.2.15-2+b13) is enough for Trivy's OS detection.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.manifest import Manifest
from pipeline.local import trivydb
from pipeline.local.registry import LocalRegistry
from pipeline.tools import trivy
from tests.integration.build_records import built_record
from tests.ports import PortPool


def run_scan(services: list[str] | None, env_name: str, *, config: Config, manifest: Manifest,
             cache_dir: Path | None = None, log: Callable[[str], None] | None = None,
             today: Any = None) -> dict[str, dict[str, Any]]:
    """The scan stage on one manifest, as the tests drive it: each scanned service's recorded result."""
    from pipeline.core.reporter import PlainReporter
    from pipeline.stages.scan import scan_images
    from tests.integration.registry_fixtures import StageResults

    reporter = PlainReporter(sink=log or (lambda _line: None))
    summary = scan_images(config, config.env(env_name), manifest, reporter, services, cache_dir=cache_dir,
                          today=today)
    return StageResults({n: manifest.stage_result(n, "scan") or {} for n in services or manifest.services()}, summary)

PORTS = range(5200, 5250)

OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""


def dpkg_status(version: str = "5.2.15-2+b13", source: str = "bash (5.2.15-2)") -> str:
    return (f"Package: bash\nEssential: yes\nStatus: install ok installed\nPriority: required\nSection: shells\n"
            f"Installed-Size: 7164\nMaintainer: Matthias Klose <doko@debian.org>\nArchitecture: amd64\n"
            f"Multi-Arch: foreign\nSource: {source}\nVersion: {version}\nDescription: GNU Bourne Again SHell\n\n")


def debian_files(bash_version: str = "5.2.15-2+b13", source: str = "bash (5.2.15-2)") -> dict[str, bytes]:
    return {"etc/os-release": OS_RELEASE.encode(), "etc/debian_version": b"12.11\n",
            "var/lib/dpkg/status": dpkg_status(bash_version, source).encode()}


def fake_aws_credentials() -> bytes:
    # assembled at run time so that this source file itself holds no secret-looking literal
    key_id = "AKIA" + "2E0A8F3B244C9986"
    secret = "g7pYbD2mRkzQ8uWf1xN3" + "hT5vJ0aLcE6sK9oP4iB7"
    return f"aws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n".encode()


free_port = PortPool(PORTS).take


def rootfs_tar(files: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(files[path]), (modes or {}).get(path, 0o644)
            tar.addfile(info, io.BytesIO(files[path]))
    return buf.getvalue()


ImageFactory = Callable[..., tuple[str, str]]


@pytest.fixture
def scan_image_factory(docker_client: Any, run_id: str) -> Iterator[ImageFactory]:
    """make(name, files, user="1000") → (ref, image id): a docker-imported image, removed after the test."""
    def make(name: str, files: dict[str, bytes], user: str = "1000", modes: dict[str, int] | None = None,
             tag: str = "t1") -> tuple[str, str]:
        repo = f"veza-scan-test/{name}-{run_id}"
        changes = [f"LABEL veza.pipeline.run={run_id}", f"USER {user}", 'CMD ["/app/hello"]']
        docker_client.api.import_image_from_data(rootfs_tar(files, modes), repository=repo, tag=tag,  # type: ignore[attr-defined]
                                                 changes=changes)
        ref = f"{repo}:{tag}"
        image_id = str(docker_client.api.inspect_image(ref)["Id"])  # type: ignore[attr-defined]
        return ref, image_id

    yield make
    # by label: the push stage may have added tags of its own to these images
    for img in docker_client.images.list(filters={"label": f"veza.pipeline.run={run_id}"}):  # type: ignore[attr-defined]
        try:
            docker_client.images.remove(img.id, force=True)  # type: ignore[attr-defined]
        except Exception:
            pass


# ---------------------------------------------------------------- an offline Trivy DB in a real registry

ADVISORIES = [
    {"id": "CVE-2099-0001", "source": "debian 12", "package": "bash", "fixed": "5.2.15-3", "severity": "HIGH",
     "title": "bash: test advisory (fixed in 5.2.15-3)"},
    {"id": "GO-2099-0001", "source": "go::The Go Vulnerability Database", "package": "stdlib",
     "vulnerable": ["<1.19.99"], "patched": ["1.19.99"], "severity": "HIGH", "title": "Go stdlib test advisory"},
    {"id": "GHSA-test-pip0-0001", "source": "pip::GitHub Security Advisory pip", "package": "requests",
     "vulnerable": ["<2.20.0"], "patched": ["2.20.0"], "severity": "HIGH", "title": "requests test advisory"},
    {"id": "GHSA-test-npm0-0001", "source": "npm::GitHub Security Advisory npm", "package": "minimist",
     "vulnerable": ["<1.2.6"], "patched": ["1.2.6"], "severity": "CRITICAL", "title": "minimist test advisory"},
]


@dataclass
class DbMirror:
    registry: LocalRegistry
    repository: str        # host:port/path (Trivy appends :2)
    cache_dir: Path        # a Trivy cache holding this DB


def publish_db(registry: LocalRegistry, path: str, advisories: list[dict[str, Any]], work: Path) -> str:
    db_dir = trivydb.build_db(trivydb.parse_advisories(advisories), work / "db")
    archive = trivydb.package_db(db_dir, work / "db.tar.gz")
    trivydb.push_db(archive, f"{registry.address}/{path}")
    return f"{registry.address}/{path}"


@pytest.fixture(scope="session")
def scan_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    root = tmp_path_factory.mktemp("scan-registry")
    with LocalRegistry(free_port(), root=root) as reg:
        yield reg


@pytest.fixture(scope="session")
def db_mirror(scan_registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> DbMirror:
    work = tmp_path_factory.mktemp("trivydb")
    repo = publish_db(scan_registry, "trivy/db-" + uuid.uuid4().hex[:6], ADVISORIES, work)
    cache = work / "cache"
    trivy.download_db(repo, cache)
    return DbMirror(scan_registry, repo, cache)


def scan_config(tmp_path: Path, *, db_repository: str, threshold: str = "HIGH", ignore_unfixed: bool = False,
                ignore_file: str = ".trivyignore.yaml", registry: str = "127.0.0.1:5200") -> Config:
    """A minimal pipeline.toml with one service and one environment 'test' of the given gate."""
    (tmp_path / "pipeline.toml").write_text("\n".join([
        "[project]", 'name = "veza"', 'state_dir = ".pipeline"', "",
        "[registry]", f'address = "{registry}"', 'namespace = "scan"', "",
        "[scan]", f'db_repository = "{db_repository}"', f'ignore_file = "{ignore_file}"', "timeout_s = 300", "",
        "[[services]]", 'name = "svc-a"', 'context = "ctx"', 'dockerfile = "ctx/Dockerfile"', "port = 18080", "",
        "[environments.test]", 'namespace = "t"', 'values_file = "v.yaml"', 'stages = ["build", "scan", "push"]',
        'tags = ["sha"]', f'scan_threshold = "{threshold}"', f"ignore_unfixed = {str(ignore_unfixed).lower()}", "",
    ]))
    return load_config(tmp_path / "pipeline.toml", check_files=False)


def built_manifest(tmp_path: Path, services: dict[str, tuple[str, str]]) -> Manifest:
    """A Release manifest whose services were 'built' as the given (ref, image id)."""
    man = Manifest.new(tmp_path / ".pipeline" / "manifest.json", env="test", release_id="test-0000000",
                       version={"sha": "0000000"})
    for name, (ref, image_id) in services.items():
        repo, _, tag = ref.rpartition(":")
        man.set_service(name, repository=repo, tags=[tag], input_digest="sha256:" + "0" * 64)
        man.record(name, "build", built_record(image_id, commit="0000000"))
    return man


def with_db(cfg: Config, repository: str) -> Config:
    return replace(cfg, scan=replace(cfg.scan, db_repository=repository))
