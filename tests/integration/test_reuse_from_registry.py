"""A fresh runner reuses another environment's registry, trusting only its keys (issue 26, item 4; `reuse_from`).

Two real registries on two loopback hosts: dev's on 127.0.0.1 (plain), prod's on 127.0.0.21 behind htpasswd, its
credentials from the variables the config names. A project of three tiny services (inputs unique to the run).
dev builds, pushes and signs them (its auto_key). The runner is then made fresh: the images this test built are
removed from the engine and the state directory is deleted. prod, whose `reuse_from = ["dev"]`, builds nothing:
the plan finds each input tag in dev's repository, checks dev's signature and provenance, and the push copies each
image by digest from dev's registry to prod's (skopeo, registry to registry: the engine never holds them); prod's
sign stage signs them with prod's key and verify-images (prod's key only) passes. Then dev's new images for two
changed services are pushed unsigned, or signed by a key dev does not trust: prod builds those two and says why,
and reuses the unchanged one from its own repository. A copy that fails (dev's registry stopped) records the push
failed, nothing else; the rerun, with dev's registry back, completes it.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.core.config import Config, load_config
from pipeline.core.errors import StageFailed
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.local.registry import LocalRegistry, write_htpasswd
from pipeline.release.runner import run_command
from pipeline.tools import docker
from pipeline.tools.registry_api import Credentials, RegistryClient, split_repository
from pipeline.trust import envkeys
from pipeline.trust.signing import sign_image
from tests.integration.reuse_support import blob_writes, commit_all, remove_image
from tests.ports import PortPool

pytestmark = [pytest.mark.engine, pytest.mark.registry]

SERVICES = ("api", "chat", "docs")
DOCKERFILE = "FROM scratch\nCOPY . /app/\nUSER 1001\n"
PROD_HOST = "127.0.0.21"
free_port = PortPool(range(21500, 21560)).take
USER_ENV, PASSWORD_ENV = "VEZA_REUSE_FROM_PROD_USER", "VEZA_REUSE_FROM_PROD_PASSWORD"
PROD_PASS_ENV, DEV_PASS_ENV = "VEZA_REUSE_FROM_PROD_PASSPHRASE", "VEZA_REUSE_FROM_DEV_PASSPHRASE"
ENGINE_AGENT = '"docker/'   # the user agent of the engine's pushes in the registry's access log
STAGES = ["build", "push", "sign"]   # verify-images renders a chart this project lacks: verify() asks the same


def _config(run: str, dev: str, prod: str) -> str:
    lines = ["[project]", 'name = "reusefrom"', 'source_url = "https://example.invalid/reusefrom"', "",
             "[registry]", f'address = "{dev}"', f'namespace = "rf-{run}"', "retry_attempts = 2",
             "retry_ceiling_s = 0.2", "timeout_s = 30", "",
             "[signing]", f'passphrase_env = "{DEV_PASS_ENV}"', ""]
    for i, name in enumerate(SERVICES):
        lines += ["[[services]]", f'name = "{name}"', f'context = "services/{name}"',
                  f'dockerfile = "dockerfiles/{name}.Dockerfile"', f"port = {21570 + i}", ""]
    common = ['values_file = "values.yaml"', f"stages = {STAGES!r}".replace("'", '"'), 'tags = ["sha"]']
    lines += ["[environments.dev]", f'registry = "{dev}"', f'registry_namespace = "rf-{run}-dev"',
              'namespace = "rf-dev"', "auto_key = true", *common, "",
              "[environments.prod]", f'registry = "{prod}"', f'registry_namespace = "rf-{run}"',
              'namespace = "rf-prod"', f'registry_username_env = "{USER_ENV}"',
              f'registry_password_env = "{PASSWORD_ENV}"', f'signing_passphrase_env = "{PROD_PASS_ENV}"',
              'reuse_from = ["dev"]', *common, ""]
    return "\n".join(lines)


@dataclass
class Project:
    root: Path
    run: str
    dev: LocalRegistry
    prod: LocalRegistry
    prod_client: RegistryClient
    lines: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)   # image IDs this test built (removed at the end)

    @property
    def cfg(self) -> Config:
        return load_config(self.root / "pipeline.toml")

    def manifest(self, env: str) -> Manifest:
        return Manifest.load(self.root / ".pipeline" / env / "manifest.json")

    def commit(self, message: str) -> None:
        commit_all(self.root, message)

    def run_stages(self, env: str, stages: list[str]) -> Manifest:
        cfg = self.cfg
        try:
            run_command(cfg, cfg.env(env), stages, PlainReporter(sink=self.lines.append))
        finally:
            if (self.root / ".pipeline" / env / "manifest.json").exists():
                self.made += [str(b.image_id) for n in SERVICES if (b := self.manifest(env).built(n)) is not None
                              and b.status == "built"]
        return self.manifest(env)

    def verify(self, env: str, m: Manifest) -> None:
        """verify-images' gate on every pushed image of `m` (repository@digest), with env's trusted keys."""
        from pipeline.stages.verify_images import verify_images

        refs = [f"{b.repository}@{b.digest}" for n in SERVICES if (b := m.pushed(n)) is not None]
        assert len(refs) == len(SERVICES)
        cfg = self.cfg
        verify_images(cfg, cfg.env(env), m, PlainReporter(sink=self.lines.append), images=refs)

    def fresh(self) -> None:
        """An engine without any image of this project, and no state directory (the keys live outside it)."""
        for image_id in self.made:
            remove_image(image_id)
            assert docker.image_id(image_id) is None
        shutil.rmtree(self.root / ".pipeline", ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path, docker_client: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    run = "r" + uuid.uuid4().hex[:8]
    root = tmp_path / "project"
    for name in SERVICES:
        (root / "services" / name).mkdir(parents=True)
        (root / "services" / name / "index.txt").write_text(f"{name} {run} v1\n")   # inputs no other run has
        (root / "dockerfiles").mkdir(exist_ok=True)
        (root / "dockerfiles" / f"{name}.Dockerfile").write_text(DOCKERFILE)
    (root / ".gitignore").write_text(".pipeline/\n")
    password = uuid.uuid4().hex
    for var, value in ((USER_ENV, "ci"), (PASSWORD_ENV, password), (PROD_PASS_ENV, uuid.uuid4().hex),
                       (DEV_PASS_ENV, uuid.uuid4().hex), ("VEZA_KEY_DIR", str(tmp_path / "keys"))):
        monkeypatch.setenv(var, value)
    htpasswd = write_htpasswd(tmp_path / "auth" / "htpasswd", {"ci": password})
    with LocalRegistry(free_port(), root=tmp_path / "dev-registry") as dev, \
            LocalRegistry(free_port(), root=tmp_path / "prod-registry", htpasswd=htpasswd, host=PROD_HOST) as prod:
        (root / "pipeline.toml").write_text(_config(run, dev.address, prod.address))
        p = Project(root, run, dev, prod, RegistryClient(prod.address, credentials=Credentials("ci", password)))
        envkeys.keygen(p.cfg, p.cfg.env("prod"))
        try:
            yield p
        finally:
            for image_id in p.made:
                remove_image(image_id)


def _reason(m: Manifest, name: str) -> str:
    return str((m.stage_result(name, "build") or {}).get("reason", ""))


def test_prod_on_a_fresh_runner_reuses_only_what_devs_keys_vouch_for(project: Project) -> None:
    p = project
    p.commit("feat: three services")
    dev_a = p.run_stages("dev", STAGES)
    dev_digest = {n: str(dev_a.pushed(n).digest) for n in SERVICES}   # type: ignore[union-attr]
    assert all(str(dev_a.built(n).status) == "built" for n in SERVICES)   # type: ignore[union-attr]

    p.fresh()
    p.lines.clear()
    mark = p.prod.log_file.stat().st_size if p.prod.log_file.exists() else 0
    prod = p.run_stages("prod", STAGES)
    p.verify("prod", prod)   # verify-images' gate, trusting prod's key alone: raises on any problem
    with p.prod.log_file.open("rb") as fh:
        fh.seek(mark)
        log = fh.read().decode(errors="replace")
    layers = [line for line in blob_writes(log, "") if "Python-urllib" not in line]   # not the signatures'
    assert layers and all(ENGINE_AGENT not in line for line in layers), layers   # skopeo's copy, never the engine
    for n in SERVICES:
        built, pushed = prod.built(n), prod.pushed(n)
        assert built is not None and pushed is not None
        dev_ref = f"{dev_a.built(n).repository}@{dev_digest[n]}"   # type: ignore[union-attr]
        assert str(built.status) == "reused" and built.registry_image == dev_ref
        raw = prod.stage_result(n, "build") or {}
        assert raw["reuse"]["from_environment"] == "dev"
        assert raw["reason"].startswith(f"reused from dev's {dev_ref}, signed and attested by dev's keys")
        assert built.origin is not None and built.origin.commit == dev_a.commit   # dev's build's facts (labels)
        # copied by digest into prod's own repository, under prod's tags; never through the engine
        assert pushed.repository == p.cfg.env("prod").repository(p.cfg.service(n))
        assert pushed.digest == dev_digest[n] and (prod.stage_result(n, "push") or {})["method"] == "retag"
        _, repo = split_repository(pushed.repository)
        for tag in pushed.tags:
            found = p.prod_client.head_manifest(repo, tag)
            assert found is not None and found.digest == dev_digest[n]
        assert docker.image_id(dev_ref) is None and docker.image_id(str(built.image_id)) is None
        assert (prod.stage_result(n, "signature") or {})["ref"].startswith(pushed.repository)
    assert not any("building " in line and "image(s)" in line for line in p.lines), p.lines   # nothing built
    assert len(envkeys.trusted_keys(p.cfg, p.cfg.env("prod"))) == 1   # prod's key alone, not dev's

    # dev's next images for api (unsigned) and docs (signed, but by a key dev does not trust): prod builds them.
    for n in ("api", "docs"):
        (p.root / "services" / n / "index.txt").write_text(f"{n} {p.run} v2\n")
    p.commit("feat: api and docs change")
    dev_b = p.run_stages("dev", ["build", "push"])
    docs = dev_b.pushed("docs")
    assert docs is not None and docs.digest
    address, docs_repo = split_repository(docs.repository)
    sign_image(RegistryClient(address), docs_repo, docs.digest, ec.generate_private_key(ec.SECP256R1()))
    p.fresh()
    p.lines.clear()
    mark = p.prod.log_file.stat().st_size
    prod = p.run_stages("prod", STAGES)
    with p.prod.log_file.open("rb") as fh:
        fh.seek(mark)
        assert any(ENGINE_AGENT in line for line in blob_writes(fh.read().decode(errors="replace"), ""))   # seen
    status = {n: str(prod.built(n).status) for n in SERVICES}   # type: ignore[union-attr]
    assert status == {"api": "built", "chat": "reused", "docs": "built"}
    api_note = (prod.stage_result("api", "build") or {})["registry_note"]
    docs_note = (prod.stage_result("docs", "build") or {})["registry_note"]
    dev_api = f"{dev_b.built('api').repository}@{dev_b.pushed('api').digest}"   # type: ignore[union-attr]
    assert f"dev's image for this input digest ({dev_api}) is not signed and attested by dev's keys: no signature " \
        "(nothing under the .sig tag); no provenance" in api_note
    assert "is not signed and attested by dev's keys: not signed by a trusted key (found a signature by an " \
        "untrusted key); no provenance" in docs_note
    for n, note in (("api", api_note), ("docs", docs_note)):   # the plan's row says it too
        assert any(line.startswith(f"  {n} |") and note in line for line in p.lines), p.lines
    chat = prod.built("chat")
    assert chat is not None and chat.registry_image.startswith(f"{p.prod.address}/")   # prod's own repository
    assert "dev's" not in _reason(prod, "chat")


def test_a_copy_that_fails_records_nothing_done_and_the_rerun_completes_it(project: Project) -> None:
    p = project
    p.commit("feat: three services")
    dev_a = p.run_stages("dev", STAGES)
    p.fresh()
    prod = p.run_stages("prod", ["build"])
    assert all(str(prod.built(n).status) == "reused" for n in SERVICES)   # type: ignore[union-attr]
    p.dev.stop()
    with pytest.raises(StageFailed):
        p.run_stages("prod", ["push"])
    prod = p.manifest("prod")
    for n in SERVICES:
        pushed = prod.pushed(n)
        assert pushed is None or not pushed.ok
        _, repo = split_repository(p.cfg.env("prod").repository(p.cfg.service(n)))
        assert p.prod_client.head_manifest(repo, str(dev_a.pushed(n).digest)) is None   # type: ignore[union-attr]
    p.dev.start()
    prod = p.run_stages("prod", ["push", "sign"])
    p.verify("prod", prod)
    assert all(prod.pushed(n) is not None and prod.pushed(n).ok   # type: ignore[union-attr]
               and prod.pushed(n).digest == dev_a.pushed(n).digest for n in SERVICES)   # type: ignore[union-attr]


def test_within_one_registry_the_reuse_mounts_devs_blobs_and_uploads_no_layer(project: Project) -> None:
    p = project
    text = (p.root / "pipeline.toml").read_text().replace(f'registry = "{p.prod.address}"',
                                                          f'registry = "{p.dev.address}"')
    (p.root / "pipeline.toml").write_text(text.replace(f'registry_username_env = "{USER_ENV}"\n', "")
                                          .replace(f'registry_password_env = "{PASSWORD_ENV}"\n', ""))
    p.commit("feat: three services")
    dev_a = p.run_stages("dev", STAGES)
    p.fresh()
    mark = p.dev.log_file.stat().st_size
    p.run_stages("prod", ["build", "push"])   # the signatures' own blobs (the sign stage's) are not layers
    with p.dev.log_file.open("rb") as fh:
        fh.seek(mark)
        log = fh.read().decode(errors="replace")
    prod = p.run_stages("prod", ["sign"])
    p.verify("prod", prod)
    for n in SERVICES:
        built, pushed = prod.built(n), prod.pushed(n)
        assert built is not None and pushed is not None and str(built.status) == "reused"
        assert (prod.stage_result(n, "build") or {})["reuse"]["from_environment"] == "dev"
        assert pushed.digest == dev_a.pushed(n).digest   # type: ignore[union-attr]
        _, repo = split_repository(pushed.repository)
        assert repo.startswith(f"rf-{p.run}/") and not blob_writes(log, repo), repo   # no layer uploaded
        assert f'"POST /v2/{repo}/blobs/uploads/?mount=sha256' in log   # its blobs came by mount
