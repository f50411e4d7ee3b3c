"""The vulnerability gate with the embedded seed, end to end: real engine, real registry, real Trivy.

One project (a git repo holding the real veza-docs service and Dockerfile, Redis as its infra image) is
released to a "staging" environment three times:
  1. with the Go 1.22.12 builder the bases used to carry: the real Go stdlib CVEs are reported by ID, the
     gate blocks with exit 3, and nothing is pushed; the Redis image's Debian finding is in the report;
  2. with dated, justified ignore entries: the release passes, and the report lists what was ignored;
  3. with the Go 1.27.3 builder and the Go entries removed again: it passes, and the report names the
     findings the new Go resolved.
Ports 19300-19349 (registries). Every image a run builds is removed after.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PolicyBlocked
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.reporter import PlainReporter
from pipeline.local.registry import LocalRegistry
from pipeline.release.release import run_release as release
from pipeline.tools import docker as docker_tool
from tests.ports import PortPool

pytestmark = [pytest.mark.engine, pytest.mark.registry]

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "pipeline" / "local" / "trivydb" / "local-mirror.yaml"
GO122_RECIPE = Path(__file__).resolve().parent / "fixtures" / "go122-builder"
GO1273 = "veza-local/golang:1.27-bookworm"
DEBIAN = "veza-local/debian:bookworm"
REDIS = "veza-local/redis:7"
free_port = PortPool(range(19300, 19350)).take

CONFIG = """
[project]
name = "veza"

[registry]
address = "{registry}"
namespace = "i18-{run}"

[scan]
db_repository = "{registry}/trivy/db"
mirror_seed = "{seed}"
ignore_file = ".trivyignore.yaml"
scanners = ["vuln"]
timeout_s = 300

[bases.golang]
upstream = "example.invalid/golang:{run}"
local = "{go_image}"
recipe = "golang"
build_arg = "GO_IMAGE"

[bases.redis]
upstream = "example.invalid/redis:{run}"
local = "{redis}"
recipe = "redis"

[[services]]
name = "veza-docs"
context = "services/docs"
dockerfile = "dockerfiles/veza-docs.Dockerfile"
port = 8083
bases = ["golang"]

[infra.redis]
base = "redis"
port = 6379

[environments.staging]
registry = "{registry}"
registry_namespace = "i18-{run}"
namespace = "veza-i18-staging"
values_file = "values.yaml"
stages = ["build", "scan", "push"]
tags = ["sha"]
scan_threshold = "HIGH"
infra_scan_threshold = "CRITICAL"
ignore_unfixed = false
local_infra = true
"""

ZLIB_ENTRY = {"id": "CVE-2023-45853", "reason": "minizip is not shipped by zlib1g (Debian: will_not_fix)",
              "expires": "2099-12-31", "packages": ["zlib1g"]}


def _require_image(ref: str) -> None:
    if not docker_tool.image_id(ref):
        pytest.fail(f"{ref} is not in the engine: run `invoke bases` first (it builds the local bases)")


@dataclass
class Project:
    root: Path
    run: str
    registry: LocalRegistry

    def configure(self, go_image: str, ignores: list[dict[str, Any]], message: str) -> Config:
        (self.root / "pipeline.toml").write_text(CONFIG.format(
            registry=self.registry.address, run=self.run, seed=SEED, go_image=go_image, redis=REDIS))
        (self.root / ".trivyignore.yaml").write_text(yaml.safe_dump({"ignores": ignores}))
        self.git("add", "-A")
        self.git("commit", "-qm", message)
        return load_config(self.root / "pipeline.toml")

    def git(self, *args: str) -> None:
        subprocess.run(["git", "-C", str(self.root), *args], check=True, timeout=30, capture_output=True)

    def manifest(self) -> Manifest:
        return Manifest.load(manifest_path(self.root / ".pipeline", "staging"))

    def summary(self) -> str:
        return (self.manifest().path.parent / "reports" / "scan-summary.md").read_text()


def run_release(env: str, *, cfg: Config) -> None:
    release(cfg, cfg.env(env), PlainReporter())


@pytest.fixture(scope="module")
def go122_builder(docker_client: Any) -> Iterator[str]:
    """The Go 1.22.12 builder image of the bases before this change, built from the fixture recipe."""
    _require_image(DEBIAN)
    run = "t" + uuid.uuid4().hex[:10]
    tag = f"veza-i18-test/golang:1.22-{run}"
    log: list[str] = []
    rc = docker_tool.build_image(context=GO122_RECIPE, dockerfile=GO122_RECIPE / "Dockerfile", tags=[tag],
                                 build_args={"DEBIAN_IMAGE": DEBIAN}, labels={"veza.pipeline.run": run},
                                 no_cache=False, on_line=log.append, timeout=900,
                                 iidfile=Path(f"/tmp/veza-i18-{run}.iid"))
    assert rc == 0, "\n".join(log[-20:])
    yield tag
    docker_client.images.remove(tag, force=True)  # type: ignore[attr-defined]


@pytest.fixture
def project(tmp_path: Path, docker_client: Any) -> Iterator[Project]:
    _require_image(GO1273)
    _require_image(REDIS)
    run = "t" + uuid.uuid4().hex[:10]
    root = tmp_path / "project"
    shutil.copytree(ROOT / "services" / "docs", root / "services" / "docs")
    (root / "dockerfiles").mkdir()
    shutil.copy(ROOT / "dockerfiles" / "veza-docs.Dockerfile", root / "dockerfiles" / "veza-docs.Dockerfile")
    (root / ".gitignore").write_text(".pipeline/\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, timeout=30)
    for k, v in (("user.name", "i18 test"), ("user.email", "i18@example.invalid")):
        subprocess.run(["git", "-C", str(root), "config", k, v], check=True, timeout=30)
    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        yield Project(root, run, reg)
    # our tags only, not the image by ID: a reproducible build gives another test's image the same ID (and a
    # test in another lane may be running a container of it)
    for img in docker_client.images.list():  # type: ignore[attr-defined]
        for tag in (t for t in img.tags if f"i18-{run}/" in t):
            docker_client.images.remove(tag)  # type: ignore[attr-defined]


def _catalog(reg: LocalRegistry) -> list[str]:
    from pipeline.tools.registry_api import RegistryClient

    return RegistryClient(reg.address, timeout=10).catalog()


def test_staging_gate_blocks_go_1_22_then_ignores_then_go_1_27_3_resolves(
        project: Project, go122_builder: str, capsys: pytest.CaptureFixture[str]) -> None:
    # 1) today's images: Go 1.22.12 in the service binary, real stdlib CVEs, blocked before any push
    cfg = project.configure(go122_builder, [], "feat: docs with the Go 1.22 builder")
    with pytest.raises(PolicyBlocked) as exc:
        run_release("staging", cfg=cfg)
    assert exc.value.exit_code == 3
    out = capsys.readouterr().out
    man = project.manifest()
    scan = man.stage_result("veza-docs", "scan")
    assert scan is not None and scan["status"] == "blocked"
    report = json.loads(Path(scan["report"]).read_text())
    stdlib = {(v["VulnerabilityID"], v["InstalledVersion"]) for r in report["Results"]
              for v in r.get("Vulnerabilities") or [] if v["PkgName"] == "stdlib"}
    assert {("CVE-2025-47907", "v1.22.12"), ("CVE-2025-58187", "v1.22.12"), ("CVE-2025-22871", "v1.22.12")} <= stdlib
    assert len(stdlib) == 52
    blocking = {f["id"] for f in scan["blocking"]}
    assert "CVE-2025-47907" in blocking and "CVE-2025-47907" in out    # HIGH: named in the blocking table
    assert man.data["stages"]["scan"]["exit_code"] == 3
    assert "push" not in man.data["stages"]
    assert not any("veza-docs" in repo for repo in _catalog(project.registry))   # nothing was pushed
    redis = man.infra_result("redis", "scan")
    assert redis is not None and redis["status"] == "blocked" and redis["threshold"] == "CRITICAL"
    assert [f["id"] for f in redis["blocking"]] == ["CVE-2023-45853"]
    summary = project.summary()
    assert "infra/redis" in summary and "CVE-2023-45853" in summary and "CVE-2025-47907" in summary
    [run_report] = (project.root / ".pipeline").glob("**/runs/*/report.md")
    assert f"| redis (`{REDIS}`) | blocked | CRITICAL | 1 CRITICAL" in run_report.read_text()

    # 2) justified, dated exceptions for every blocking finding: the release passes and the report lists them
    high = sorted({v["VulnerabilityID"] for r in report["Results"] for v in r.get("Vulnerabilities") or []
                   if v["PkgName"] == "stdlib" and v["Severity"] in ("HIGH", "CRITICAL")})
    go_entries = [{"id": cve, "reason": "docs server: reviewed, not reachable (test)", "expires": "2099-12-31",
                   "packages": ["stdlib"]} for cve in high]
    cfg = project.configure(go122_builder, [ZLIB_ENTRY, *go_entries], "chore: scan exceptions")
    run_release("staging", cfg=cfg)
    man = project.manifest()
    assert man.data["stages"]["push"]["status"] == "ok"
    assert any("veza-docs" in repo for repo in _catalog(project.registry))
    summary = project.summary()
    assert "## veza-docs: ignored by the ignore file" in summary
    assert f"- {high[0]} (stdlib): docs server: reviewed, not reachable (test)" in summary
    assert "- CVE-2023-45853 (zlib1g): minizip is not shipped" in summary

    # 3) remediation: the Go 1.27.3 builder, the Go exceptions removed; the report says what Go 1.27.3 fixed
    capsys.readouterr()
    cfg = project.configure(GO1273, [ZLIB_ENTRY], "build: Go 1.27.3")
    run_release("staging", cfg=cfg)
    out = capsys.readouterr().out
    man = project.manifest()
    scan = man.stage_result("veza-docs", "scan")
    assert scan is not None and scan["status"] == "pass" and scan["ignored_count"] == 0
    report = json.loads(Path(scan["report"]).read_text())
    assert not [v for r in report["Results"] for v in r.get("Vulnerabilities") or [] if v["PkgName"] == "stdlib"]
    since = scan["since_last_scan"]
    assert len(since["resolved"]) == 52 and "CVE-2025-47907 stdlib" in since["resolved"]
    assert since["introduced"] == []
    assert "52 resolved (CVE-2025-0913, CVE-2025-22870" in out
    assert "- resolved (52): CVE-2025-0913 stdlib" in project.summary()
