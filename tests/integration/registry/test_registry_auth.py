"""htpasswd auth on a real registry: wrong credentials fail fast (exit 2), right ones work, and the
password appears nowhere: stdout, stderr, files under the project root (manifest, logs, reports),
or any process's argv sampled from /proc during the push and the promote."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import RegistryAuthError
from pipeline.local.registry import LocalRegistry, write_htpasswd
from pipeline.stages.push import check_registry_writable
from pipeline.tools.registry_api import Credentials, RegistryClient, split_repository
from tests.integration.registry_fixtures import free_port, make_manifest, write_config

pytestmark = [pytest.mark.engine, pytest.mark.registry]
ROOT = Path(__file__).resolve().parents[3]
INVOKE = str(Path(sys.executable).parent / "invoke")
USER = "veza-ci"
PASSWORD = "Pw-7c1e9f0b-known-secret"  # the known test password the test hunts for
TAGS = ["sha-abcdef1", "main"]


class ArgvSampler:
    """Reads every process's /proc/<pid>/cmdline in a loop, remembering each distinct argv."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as fh:
                            self.seen.add(fh.read())
                    except OSError:
                        pass
            self.samples += 1

    def __enter__(self) -> ArgvSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def _cli(root: Path, *args: str, user: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEZA_ROOT": str(root), "VEZA_TEST_REGISTRY_USER": user,
           "VEZA_TEST_REGISTRY_PASSWORD": password}
    return subprocess.run([INVOKE, "-r", str(ROOT), *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture
def auth_registry(tmp_path: Path) -> Any:
    htpasswd = write_htpasswd(tmp_path / "registry" / "auth" / "htpasswd", {USER: PASSWORD})
    with LocalRegistry(free_port(), root=tmp_path / "registry", htpasswd=htpasswd) as reg:
        yield reg


def test_wrong_credentials_fail_fast_right_ones_work_password_nowhere(
        tmp_path: Path, auth_registry: LocalRegistry, image_factory: Any, run_id: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    cfg = write_config(project / "pipeline.toml", namespace=run_id,
                       registries={"dev": auth_registry.address, "prod": auth_registry.address})
    env = cfg.env("dev")
    images = [image_factory(s, env.repository(cfg.service(s)), TAGS) for s in ("svc-a", "svc-b")]
    man = make_manifest(project / ".pipeline" / "dev" / "manifest.json", cfg, "dev", images)

    # The registry really demands auth, and the pre-flight says so before any build.
    assert RegistryClient(auth_registry.address).request("GET", "/v2/", allow=(401,))[0] == 401
    with pytest.raises(RegistryAuthError):
        check_registry_writable(cfg, env)
    os.environ["VEZA_TEST_REGISTRY_USER"], os.environ["VEZA_TEST_REGISTRY_PASSWORD"] = USER, PASSWORD
    try:
        check_registry_writable(cfg, env)
    finally:
        del os.environ["VEZA_TEST_REGISTRY_USER"], os.environ["VEZA_TEST_REGISTRY_PASSWORD"]

    # Wrong password: exit 2 at once, one clear line, no retries, nothing recorded as pushed.
    wrong = "Wrong-" + PASSWORD[::-1]
    t0 = time.monotonic()
    bad = _cli(project, "push", "--env", "dev", user=USER, password=wrong)
    elapsed = time.monotonic() - t0
    print(f"wrong credentials: exit {bad.returncode} in {elapsed:.2f}s: {bad.stderr.strip()}")
    assert bad.returncode == 2
    assert "refused user 'veza-ci'" in bad.stderr and "HTTP 401" in bad.stderr
    assert "Traceback" not in bad.stderr and wrong not in bad.stdout + bad.stderr
    assert elapsed < 15  # fail fast: no backoff loop (mostly invoke + imports)
    assert all(man.stage_result(s, "push") is None for s in ("svc-a", "svc-b"))

    # Right password: push, then promote (skopeo with an authfile), argv sampled all along.
    with ArgvSampler() as sampler:
        ok = _cli(project, "push", "--env", "dev", user=USER, password=PASSWORD)
        promo = _cli(project, "promote", "--from", "dev", "--to", "prod", user=USER, password=PASSWORD)
    print(ok.stdout, promo.stdout, f"argv sampler: {sampler.samples} sweeps, {len(sampler.seen)} argvs")
    assert ok.returncode == 0, ok.stderr
    assert promo.returncode == 0, promo.stderr
    assert any(b"skopeo" in a for a in sampler.seen)  # the sampler did see the children
    assert any(b"--authfile" in a for a in sampler.seen)

    creds = Credentials(USER, PASSWORD)
    client = RegistryClient(auth_registry.address, credentials=creds)
    data = (project / ".pipeline" / "dev" / "manifest.json").read_text()
    import json

    doc = json.loads(data)
    for s in ("svc-a", "svc-b"):
        push = doc["services"][s]["push"]
        _, path = split_repository(push["repository"])
        assert push["status"] == "pushed"
        assert client.head_manifest(path, TAGS[0]).digest == push["digest"]  # type: ignore[union-attr]
        assert doc["services"][s]["promotions"]["prod"]["digest"] == push["digest"]

    needles = [PASSWORD.encode(), creds.basic().encode()]
    for argv in sampler.seen:
        assert not any(n in argv for n in needles), argv.replace(b"\0", b" ")[:200]
    for text in (ok.stdout, ok.stderr, promo.stdout, promo.stderr, bad.stdout, bad.stderr):
        assert PASSWORD not in text and creds.basic() not in text
    scanned = 0
    for f in tmp_path.rglob("*"):  # manifest, registry config/log, htpasswd (bcrypt), state, any report
        if f.is_file():
            scanned += 1
            blob = f.read_bytes()
            assert not any(n in blob for n in needles), f
    assert scanned >= 5
    assert not list(Path("/tmp").glob("veza-auth-*.json"))  # skopeo's temporary authfile is gone
