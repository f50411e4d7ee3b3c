"""Fixtures of the signing/verification tests: a real registry on 127.0.0.1:19600-19699, tiny OCI images
pushed through the registry API (no engine needed), a config whose keys live in the test's tmp dir, and the
second verifier (Sigstore's JavaScript libraries, installed from a hash-locked npm lock)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.manifest import Manifest
from pipeline.core.paths import CACHE_DIR
from pipeline.local.registry import LocalRegistry
from pipeline.tools.registry_api import RegistryClient, split_repository
from tests.integration.build_records import built_record
from tests.ports import PortPool

free_port = PortPool(range(19600, 19700)).take
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PASS_VARS = {"dev": "VEZA_TEST_DEV_SIGNING_PASSPHRASE", "prod": "VEZA_TEST_PROD_SIGNING_PASSPHRASE"}


def push_tiny_image(client: RegistryClient, repo: str, tag: str, content: bytes) -> str:
    """A one-layer OCI image (config + gzip layer) under repo:tag; returns its manifest digest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    raw = buf.getvalue()
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}
                        ).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": client.upload_blob(repo, config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": client.upload_blob(repo, layer), "size": len(layer)}]}
    return client.put_manifest(repo, tag, json.dumps(manifest).encode(), manifest["mediaType"])


def write_config(root: Path, registry: str, key_dir: Path) -> Config:
    """A pipeline.toml with one service and two environments (dev signs and gates, prod signs and gates)."""
    lines = [
        "[project]", 'name = "veza"', 'state_dir = ".pipeline"', 'source_url = "https://example.test/veza"', "",
        "[registry]", f'address = "{registry}"', 'namespace = "trust"', "timeout_s = 30", "",
        "[signing]", f'key_dir = "{key_dir}"', "",
        "[[services]]", 'name = "veza-docs"', 'context = "ctx"', 'dockerfile = "ctx/Dockerfile"', "port = 8083", "",
    ]
    for env in ("dev", "prod"):
        lines += [f"[environments.{env}]", f'registry = "{registry}"', f'registry_namespace = "t-{env}"',
                  f'namespace = "trust-{env}-{uuid.uuid4().hex[:8]}"', f'helm_release = "trust{uuid.uuid4().hex[:6]}"',
                  f'values_file = "helm/veza/values-{env}.yaml"',
                  'stages = ["build", "push", "sign", "verify-images", "deploy"]', 'tags = ["sha"]',
                  f'signing_passphrase_env = "{PASS_VARS[env]}"', ""]
    (root / "ctx").mkdir(parents=True, exist_ok=True)
    (root / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY payload /payload\n")
    (root / "pipeline.toml").write_text("\n".join(lines))
    return load_config(root / "pipeline.toml", check_files=False)


@dataclass
class TrustWorld:
    registry: LocalRegistry
    client: RegistryClient
    cfg: Config
    root: Path

    def repository(self, env: str = "dev") -> str:
        return self.cfg.env(env).repository(self.cfg.service("veza-docs"))

    def push(self, env: str = "dev", tag: str = "sha-0123456") -> str:
        _, repo = split_repository(self.repository(env))
        return push_tiny_image(self.client, repo, tag, f"veza-docs {uuid.uuid4().hex}".encode())

    def manifest(self, digest: str, env: str = "dev", commit: str = COMMIT) -> Manifest:
        path = self.cfg.state_dir / env / "manifest.json"
        m = Manifest.new(path, env=env, release_id=f"{env}-{commit[:7]}", version={
            "version": "1.0.0", "sha": commit, "short_sha": commit[:7], "branch": "main", "dirty": False})
        m.set_service("veza-docs", repository=self.repository(env), tags=["sha-0123456"],
                      input_digest="sha256:" + "1" * 64)
        m.record("veza-docs", "build", built_record("sha256:" + "2" * 64, commit,
                                                    build_args={"GO_IMAGE": "veza-local/golang:bookworm"},
                                                    base_images={"veza-local/golang:bookworm": "sha256:" + "3" * 64}))
        m.record("veza-docs", "push", {"status": "pushed", "digest": digest, "repository": self.repository(env)})
        m.save()
        return m


@pytest.fixture
def trust_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrustWorld]:
    for var in PASS_VARS.values():
        monkeypatch.setenv(var, f"pass-{uuid.uuid4().hex}")
    monkeypatch.delenv("VEZA_KEY_DIR", raising=False)
    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        cfg = write_config(tmp_path / "project", reg.address, tmp_path / "keys")
        yield TrustWorld(reg, RegistryClient(reg.address), cfg, tmp_path / "project")


SIGSTORE_JS = Path(__file__).parent / "sigstore_js"
SigstoreVerify = Callable[[dict[str, Any]], dict[str, Any]]


def _install_sigstore_js() -> Path:
    """`npm ci` of sigstore_js/package-lock.json (npm checks each tarball's sha512 against the lock) into
    CACHE_DIR/test-tools/sigstore-js-<hash of the lock>/, once per machine; a cached tree is used only when its
    installed versions and integrities are the lock's. pytest.fail (never skip) when node or npm cannot."""
    lock = (SIGSTORE_JS / "package-lock.json").read_bytes()
    manifest = (SIGSTORE_JS / "package.json").read_bytes()
    dest = CACHE_DIR / "test-tools" / f"sigstore-js-{hashlib.sha256(manifest + lock).hexdigest()[:16]}"
    wanted = {k: (v.get("version"), v.get("integrity")) for k, v in json.loads(lock)["packages"].items() if k}
    hidden = dest / "node_modules" / ".package-lock.json"
    if hidden.is_file():
        got = {k: (v.get("version"), v.get("integrity")) for k, v in json.loads(hidden.read_text())["packages"].items()}
        if got == wanted:
            return dest
        shutil.rmtree(dest)
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.fail("node and npm are needed for the second verifier: python3 -m pipeline.machine.bootstrap")
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(SIGSTORE_JS / name, tmp / name)
    cp = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=tmp,
                        capture_output=True, text=True, timeout=600, check=False)
    if cp.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"npm ci of {SIGSTORE_JS / 'package-lock.json'} failed: {cp.stderr.strip()[-400:]}")
    os.replace(tmp, dest)
    return dest


@pytest.fixture(scope="session")
def sigstore_verify() -> SigstoreVerify:
    """Runs sigstore_js/verify.js (@sigstore/verify) on one request; returns its JSON answer (`ok`, and for a
    DSSE envelope `payloadType` and `payload`; else `code` and `message`)."""
    modules = _install_sigstore_js() / "node_modules"

    def run(request: dict[str, Any]) -> dict[str, Any]:
        cp = subprocess.run(["node", str(SIGSTORE_JS / "verify.js")], input=json.dumps(request),
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "NODE_PATH": str(modules)})
        assert cp.stdout.strip(), f"verify.js printed nothing (rc {cp.returncode}): {cp.stderr.strip()[-400:]}"
        answer: dict[str, Any] = json.loads(cp.stdout)
        assert answer["ok"] == (cp.returncode == 0), (answer, cp.stderr)
        return answer

    return run
