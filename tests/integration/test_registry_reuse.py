"""A fresh runner reuses the registry (issue 26, item 4), on the real engine and a real registry.

A project of four tiny services is built and pushed at commit A. Then the runner is made "fresh": the images
this test built are removed from the engine (only those: every input is unique to the run, so no other tree
shares their tags) and the state directory (manifest, input cache) is deleted. Commit B changes only the docs
service: `build push` builds that one and reuses the other three where the registry holds them, without
pulling them and without uploading a layer (the registry's access log shows no blob upload to their
repositories), each pushed under B's tags by a manifest PUT. The console, the manifest and the release report
name the image each came from; Trivy scans a reused image in the registry; the smoke test's pull by digest gives
the engine the image ID the build recorded; the build's resume check asks the registry (an image deleted there
no longer holds). With the registry stopped, the same fresh runner builds all four and says why.
"""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.local import stack_spec
from pipeline.local.registry import LocalRegistry, write_htpasswd
from pipeline.release.release import run_release
from pipeline.release.runner import run_command
from pipeline.stages.build import BuildStage
from pipeline.stages.registry_reuse import input_tag
from pipeline.stages.scan import scan_images
from pipeline.stages.smoke import pull_reused
from pipeline.tools import docker
from pipeline.tools.registry_api import RegistryClient, split_repository
from tests.integration.reuse_support import blob_writes, commit_all, remove_image
from tests.ports import PortPool

pytestmark = [pytest.mark.engine, pytest.mark.registry]

SERVICES = ("api", "chat", "stream", "docs")
DOCKERFILE = "FROM scratch\nCOPY . /app/\nUSER 1001\n"
free_port = PortPool(range(19250, 19300)).take
USER_ENV, PASSWORD_ENV = "VEZA_REUSE_TEST_USER", "VEZA_REUSE_TEST_PASSWORD"


def _config(run: str, address: str) -> str:
    lines = ["[project]", 'name = "reuse"', 'source_url = "https://example.invalid/reuse"', "",
             "[registry]", f'address = "{address}"', f'namespace = "reuse-{run}"', "retry_attempts = 2",
             f'username_env = "{USER_ENV}"', f'password_env = "{PASSWORD_ENV}"',
             "retry_ceiling_s = 0.2", "timeout_s = 30", "",
             # no vulnerability DB needed: the scan below checks where Trivy reads the image, not a verdict
             "[scan]", 'scanners = ["secret", "misconfig"]', 'ignore_file = ".trivyignore.yaml"', ""]
    for i, name in enumerate(SERVICES):
        lines += ["[[services]]", f'name = "{name}"', f'context = "services/{name}"',
                  f'dockerfile = "dockerfiles/{name}.Dockerfile"', f"port = {19260 + i}", ""]
    lines += ["[environments.dev]", f'registry = "{address}"', f'registry_namespace = "reuse-{run}"',
              'namespace = "reuse-dev"', 'values_file = "values.yaml"', 'stages = ["build", "push"]',
              'tags = ["sha", "branch"]', ""]
    return "\n".join(lines)


@dataclass
class Runner:
    root: Path
    run: str
    registry: LocalRegistry
    lines: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)   # image IDs this test built (removed at the end)

    @property
    def cfg(self) -> Config:
        return load_config(self.root / "pipeline.toml")

    def manifest(self) -> Manifest:
        return Manifest.load(self.root / ".pipeline" / "dev" / "manifest.json")

    def commit(self, message: str) -> None:
        commit_all(self.root, message)

    def run_stages(self, stages: list[str]) -> None:
        cfg = self.cfg
        run_command(cfg, cfg.env("dev"), stages, PlainReporter(sink=self.lines.append))

    def release_at_a(self) -> Manifest:
        """Commit A (the four services as written), `build push` it; its manifest."""
        self.commit("feat: four services")
        self.run_stages(["build", "push"])
        a = self.manifest()
        self.made += _built_ids(a)
        return a

    def fresh(self, image_ids: list[str]) -> None:
        """An empty engine for this project (its own images only) and no state directory."""
        import shutil

        for image_id in image_ids:
            remove_image(image_id)
            assert docker.image_id(image_id) is None
        shutil.rmtree(self.root / ".pipeline", ignore_errors=True)

    def log_mark(self) -> int:
        return self.registry.log_file.stat().st_size if self.registry.log_file.exists() else 0

    def log_since(self, mark: int) -> str:
        with self.registry.log_file.open("rb") as fh:
            fh.seek(mark)
            return fh.read().decode(errors="replace")


@pytest.fixture
def runner(tmp_path: Path, docker_client: object) -> Iterator[Runner]:
    yield from _runner(tmp_path, None)


@pytest.fixture
def auth_runner(tmp_path: Path, docker_client: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runner]:
    """A runner whose registry wants a password (htpasswd), given through the config's named variables."""
    password = uuid.uuid4().hex
    monkeypatch.setenv(USER_ENV, "ci")
    monkeypatch.setenv(PASSWORD_ENV, password)
    yield from _runner(tmp_path, write_htpasswd(tmp_path / "auth" / "htpasswd", {"ci": password}))


def _runner(tmp_path: Path, htpasswd: Path | None) -> Iterator[Runner]:
    run = "r" + uuid.uuid4().hex[:8]
    root = tmp_path / "project"
    for name in SERVICES:
        (root / "services" / name).mkdir(parents=True)
        (root / "services" / name / "index.txt").write_text(f"{name} {run} v1\n")   # inputs no other run has
        (root / "dockerfiles").mkdir(exist_ok=True)
        (root / "dockerfiles" / f"{name}.Dockerfile").write_text(DOCKERFILE)
    (root / ".gitignore").write_text(".pipeline/\n")
    with LocalRegistry(free_port(), root=tmp_path / "registry", htpasswd=htpasswd) as reg:
        (root / "pipeline.toml").write_text(_config(run, reg.address))
        r = Runner(root, run, reg)
        try:
            yield r
        finally:   # every image this test built (and so every tag on them: service, cache and input tags)
            for image_id in r.made:
                remove_image(image_id)


def _built_ids(m: Manifest) -> list[str]:
    return [str(b.image_id) for n in SERVICES if (b := m.built(n)) is not None and b.status == "built"]


def test_a_docs_only_commit_on_a_fresh_runner_builds_docs_and_reuses_the_rest(runner: Runner) -> None:
    r = runner
    a = r.release_at_a()
    assert {n: str(a.built(n).status) for n in SERVICES} == dict.fromkeys(SERVICES, "built")  # type: ignore[union-attr]
    digest_a = {n: str(a.pushed(n).digest) for n in SERVICES}   # type: ignore[union-attr]
    client = RegistryClient(r.registry.address)
    for n in SERVICES:   # the push gave every image its input tag
        _, repo = split_repository(a.built(n).repository)   # type: ignore[union-attr]
        found = client.head_manifest(repo, input_tag(str(a.built(n).input_digest)))   # type: ignore[union-attr]
        assert found is not None and found.digest == digest_a[n]

    r.fresh(_built_ids(a))
    (r.root / "services" / "docs" / "index.txt").write_text(f"docs {r.run} v2\n")
    r.commit("docs: the docs change")
    r.lines.clear()
    mark = r.log_mark()
    ctx = run_release(r.cfg, r.cfg.env("dev"), PlainReporter(sink=r.lines.append))   # build → push, a report
    assert ctx is not None
    b = r.manifest()
    r.made += _built_ids(b)

    status = {n: str(b.built(n).status) for n in SERVICES}   # type: ignore[union-attr]
    assert status == {"api": "reused", "chat": "reused", "stream": "reused", "docs": "built"}
    log = r.log_since(mark)
    for n in ("api", "chat", "stream"):
        built, pushed = b.built(n), b.pushed(n)
        assert built is not None and pushed is not None
        ref = f"{built.repository}@{digest_a[n]}"
        assert built.registry_image == ref and built.reuse is not None and built.reuse.commit == b.commit
        assert built.origin is not None and built.origin.commit == a.commit   # the original build's facts
        assert docker.image_id(ref) is None and docker.image_id(str(built.image_id)) is None   # never pulled
        raw = b.stage_result(n, "build") or {}
        assert raw["reason"] == f"reused from {ref} (input digest {built.input_digest[:19]}…)"
        assert any(f"reused from {ref}" in line for line in r.lines), r.lines   # the console line
        assert pushed.digest == digest_a[n] and (b.stage_result(n, "push") or {})["method"] == "retag"
        _, repo = split_repository(built.repository)
        assert not blob_writes(log, repo)          # no layer uploaded for a reused image
        for tag in pushed.tags:                                  # B's tags name A's image
            found = client.head_manifest(repo, tag)
            assert found is not None and found.digest == digest_a[n]
    _, docs_repo = split_repository(str(b.built("docs").repository))   # type: ignore[union-attr]
    assert blob_writes(log, docs_repo)   # the check above sees uploads when there are some
    assert (b.stage_result("docs", "push") or {})["method"] == "engine"
    report = (ctx.run_dir / "report.md").read_text()
    for n in ("api", "chat", "stream"):
        assert f"{n} `{b.built(n).registry_image}`" in report   # type: ignore[union-attr]
    assert "docs `" not in report

    # Resuming trusts the world: a recorded reuse holds while the registry serves the image, not after.
    assert BuildStage().holds(ctx) is None
    gone = f"{b.built('chat').registry_image}"   # type: ignore[union-attr]
    repository, _, digest = gone.partition("@")
    _, repo = split_repository(repository)
    request = urllib.request.Request(f"http://{r.registry.address}/v2/{repo}/manifests/{digest}", method="DELETE")
    urllib.request.urlopen(request, timeout=10).close()
    assert BuildStage().holds(ctx) == f"registry no longer has {gone}; building chat again"

    scan_images(r.cfg, r.cfg.env("dev"), b, PlainReporter(sink=r.lines.append), ["api", "docs"],
                cache_dir=r.root.parent / "trivy-cache")
    for n in ("api", "docs"):   # Trivy read the reused ones from the registry, by digest: still not in the engine
        scanned, built = b.scanned(n), b.built(n)
        assert scanned is not None and built is not None and scanned.passed and scanned.image_id == built.image_id
        assert (b.stage_result(n, "scan") or {})["ref"] == (built.registry_image or built.local_ref)
    api = b.built("api")
    assert api is not None and docker.image_id(str(api.image_id)) is None

    # The smoke test runs what the engine has: it pulls a reused image by digest, and the engine then names it
    # by the image ID the build recorded (the config digest).
    images = stack_spec.service_images(r.cfg, b, ["api"])
    assert (images["api"].source, images["api"].ref) == ("manifest:registry", api.registry_image)
    pull_reused(images, r.lines.append)
    assert docker.image_id(api.registry_image) == api.image_id


def test_a_mistagged_image_or_a_silent_registry_means_build_with_the_reason(runner: Runner) -> None:
    r = runner
    a = r.release_at_a()

    # api's input tag now names docs' image (a tag is mutable): its config's input digest is not api's.
    client = RegistryClient(r.registry.address)
    api, docs = a.built("api"), a.built("docs")
    assert api is not None and docs is not None
    _, api_repo = split_repository(api.repository)
    _, docs_repo = split_repository(docs.repository)
    got = client.get_manifest(docs_repo, str(a.pushed("docs").digest))   # type: ignore[union-attr]
    assert got is not None
    for blob in client.children(got[0].media_type, got[1])[0]:
        assert client.mount_blob(api_repo, blob, docs_repo)
    client.put_manifest(api_repo, input_tag(api.input_digest), got[1], got[0].media_type)
    r.fresh(_built_ids(a))
    r.lines.clear()
    r.run_stages(["build"])
    b = r.manifest()
    r.made += _built_ids(b)
    assert {n: str(b.built(n).status) for n in SERVICES} == {   # type: ignore[union-attr]
        "api": "built", "chat": "reused", "stream": "reused", "docs": "reused"}
    assert any("api" in line and "carries input digest" in line for line in r.lines), r.lines

    r.fresh(r.made)
    r.registry.stop()
    r.lines.clear()
    r.run_stages(["build"])
    b = r.manifest()
    r.made += _built_ids(b)
    assert {n: str(b.built(n).status) for n in SERVICES} == dict.fromkeys(SERVICES, "built")  # type: ignore[union-attr]
    plan_rows = [line for line in r.lines if "did not answer the reuse lookup" in line]
    assert len(plan_rows) == len(SERVICES), r.lines   # the plan says why each one is built
    assert all(r.registry.address in line for line in plan_rows)


def test_behind_a_password_the_lookup_and_the_registry_scan_use_the_registry_credentials(auth_runner: Runner) -> None:
    r = auth_runner
    a = r.release_at_a()
    r.fresh(_built_ids(a))
    (r.root / "services" / "docs" / "index.txt").write_text(f"docs {r.run} v2\n")
    r.commit("docs: the docs change")
    r.run_stages(["build", "push"])
    b = r.manifest()
    r.made += _built_ids(b)
    assert [n for n in SERVICES if str(b.built(n).status) == "reused"] == ["api", "chat", "stream"]  # type: ignore[union-attr]
    scan_images(r.cfg, r.cfg.env("dev"), b, PlainReporter(sink=r.lines.append), ["api"],
                cache_dir=r.root.parent / "trivy-cache")
    scanned, api = b.scanned("api"), b.built("api")
    assert scanned is not None and api is not None and scanned.passed and scanned.image_id == api.image_id
    assert os.environ[PASSWORD_ENV] not in (r.root / ".pipeline" / "dev" / "manifest.json").read_text()
