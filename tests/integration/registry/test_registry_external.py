"""Push to a registry that is not the runner: TLS with a CA the test made, htpasswd auth, on 127.0.0.2
(tests/integration/tls_registry_fixtures.py). Credentials and CA come from the environment's keys; a certificate or
credential problem is one line naming environment, registry and variable or file, exit 2; an outage in the middle
of a push is retried within the policy, recorded failed, and the rerun pushes only what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import PipelineError, RegistryAuthError, RegistryTrustError, StageFailed
from pipeline.core.manifest import Manifest
from pipeline.local.embedded_registry import ensure_local_registry
from pipeline.stages.push import check_registry_writable
from pipeline.tools.registry_api import split_repository
from tests.integration.registry_fixtures import BuiltImage, make_manifest, run_push, write_config
from tests.integration.tls_registry_fixtures import TLS_HOST, OutageProxy, Pki, TlsRegistry, free_port

pytestmark = [pytest.mark.engine, pytest.mark.registry]
TAGS = ["sha-abcdef1", "main"]
USER_VAR, PASSWORD_VAR = "VEZA_TEST_EXT_PUSH_USER", "VEZA_TEST_EXT_PUSH_PASSWORD"


def _setup(tmp_path: Path, address: str, ca_file: Path | str, image_factory: Any, run_id: str,
           services: tuple[str, ...] = ("svc-a",), attempts: int = 3) -> tuple[Any, Manifest, list[BuiltImage]]:
    keys = {"registry_ca_file": str(ca_file), "registry_username_env": USER_VAR, "registry_password_env": PASSWORD_VAR}
    cfg = write_config(tmp_path / "pipeline.toml", registries={"dev": address}, namespace=run_id, attempts=attempts,
                       ceiling=0.2, services=services, env_keys={"dev": keys})
    env = cfg.env("dev")
    images = [image_factory(s, env.repository(cfg.service(s)), TAGS) for s in services]
    return cfg, make_manifest(tmp_path / "manifest.json", cfg, "dev", images), images


def _login(monkeypatch: pytest.MonkeyPatch, reg: TlsRegistry, password: str | None = None) -> None:
    monkeypatch.setenv(USER_VAR, reg.username)
    monkeypatch.setenv(PASSWORD_VAR, password if password is not None else reg.password)


def _one_line(exc: PipelineError) -> str:
    line = exc.one_line()
    assert "\n" not in line
    return line


def test_push_to_the_tls_registry_with_the_environments_credentials_and_ca(
        tmp_path: Path, tls_registry: TlsRegistry, image_factory: Any, run_id: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _login(monkeypatch, tls_registry)
    cfg, man, images = _setup(tmp_path, tls_registry.address, tls_registry.ca_file, image_factory, run_id)
    assert cfg.env("dev").registry_access.ca_file == tls_registry.ca_file
    check_registry_writable(cfg, cfg.env("dev"))           # the pre-flight: TLS verified, credentials accepted
    res = run_push(None, "dev", config=cfg, manifest=man)
    assert res["svc-a"]["status"] == "pushed"
    _, repo = split_repository(images[0].repository)
    for tag in TAGS:   # the registry itself serves it, to a client that verifies with the CA and logs in
        ref = tls_registry.client().head_manifest(repo, tag)
        assert ref is not None and ref.digest == res["svc-a"]["digest"]
    with pytest.raises(RegistryAuthError):   # and it is not open: anonymous is refused
        tls_registry.client(authenticated=False).head_manifest(repo, TAGS[0])


@pytest.mark.parametrize("case", ["wrong-password", "variables-unset"])
def test_a_refused_credential_is_exit_2_naming_the_environment_registry_and_variable(
        case: str, tmp_path: Path, tls_registry: TlsRegistry, image_factory: Any, run_id: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if case == "wrong-password":
        _login(monkeypatch, tls_registry, password="not-" + tls_registry.password)
    else:
        monkeypatch.delenv(USER_VAR, raising=False)
        monkeypatch.delenv(PASSWORD_VAR, raising=False)
    cfg, man, _ = _setup(tmp_path, tls_registry.address, tls_registry.ca_file, image_factory, run_id)
    for attempt in (lambda: check_registry_writable(cfg, cfg.env("dev")),
                    lambda: run_push(None, "dev", config=cfg, manifest=man)):
        with pytest.raises(RegistryAuthError) as got:
            attempt()
        line = _one_line(got.value)
        assert got.value.exit_code == 2
        assert f"environment dev: registry {tls_registry.address}" in line and PASSWORD_VAR in line, line
        assert tls_registry.password not in line
        if case == "variables-unset":
            assert f"{USER_VAR} and {PASSWORD_VAR} not set" in line, line
    assert man.stage_result("svc-a", "push") is None   # refused before anything was pushed or recorded


def _other_ca(tmp_path: Path) -> Path:
    return Pki.make(tmp_path / "other-ca", "another CA").ca_file


@pytest.mark.parametrize("case", ["missing", "not-a-certificate", "another-ca"])
def test_a_certificate_problem_is_exit_2_naming_the_environment_registry_and_file(
        case: str, tmp_path: Path, tls_registry: TlsRegistry, image_factory: Any, run_id: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _login(monkeypatch, tls_registry)
    ca = {"missing": tmp_path / "absent-ca.crt", "another-ca": _other_ca(tmp_path),
          "not-a-certificate": tmp_path / "garbage.crt"}[case]
    if case == "not-a-certificate":
        ca.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    cfg, man, _ = _setup(tmp_path, tls_registry.address, ca, image_factory, run_id, attempts=5)
    with pytest.raises(RegistryTrustError) as got:
        run_push(None, "dev", config=cfg, manifest=man)
    line = _one_line(got.value)
    assert got.value.exit_code == 2
    assert f"environment dev: registry {tls_registry.address}" in line and str(ca) in line, line
    if case == "another-ca":
        assert "TLS verification failed" in line, line
    assert man.stage_result("svc-a", "push") is None


@pytest.mark.parametrize("mode", ["503", "down"])
def test_an_outage_in_the_middle_of_a_push_fails_clearly_and_the_rerun_pushes_only_what_is_missing(
        mode: str, tmp_path: Path, outage_proxy: OutageProxy, tls_registry: TlsRegistry, image_factory: Any,
        run_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _login(monkeypatch, tls_registry)
    attempts = 3
    cfg, man, images = _setup(tmp_path, outage_proxy.address, tls_registry.ca_file, image_factory, run_id,
                              attempts=attempts)
    outage_proxy.fail_on("PUT", "/manifests/", mode)   # the layers are up; the registry fails before the manifest
    lines: list[str] = []
    with pytest.raises(StageFailed) as got:
        run_push(None, "dev", config=cfg, manifest=man, log=lines.append)
    assert got.value.exit_code == 1 and "svc-a" in got.value.message
    rec = man.stage_result("svc-a", "push")
    assert rec is not None and rec["status"] == "failed" and rec["tags_pushed"] == [], rec
    assert man.pushed("svc-a") is None or not man.pushed("svc-a").ok   # not recorded as done
    assert sum("retrying in" in line for line in lines) == attempts - 1, lines   # within the policy, then stopped
    assert ("503" if mode == "503" else "unreachable") in rec["error"], rec["error"]
    seen = list(outage_proxy.seen)
    start = next(i for i, s in enumerate(seen) if s.method == "PUT" and "/manifests/" in s.path)
    assert [s for s in seen[:start] if s.method == "PUT" and "/blobs/uploads/" in s.path], \
        "the first push uploaded its blobs before the outage"
    # Each retry asked the registry first and stopped there: no layer retries by the engine beyond the policy.
    assert all((s.method, s.path) == ("GET", "/v2/") for s in seen[start + 1:]), seen[start + 1:]

    outage_proxy.restore()
    cut = len(outage_proxy.seen)
    res = run_push(None, "dev", config=cfg, manifest=man)
    assert res["svc-a"]["status"] == "pushed"
    rerun = outage_proxy.seen[cut:]
    assert not [s for s in rerun if s.method in ("POST", "PATCH") or (s.method == "PUT" and "/blobs/" in s.path)], \
        f"the rerun uploaded blobs the registry already had: {rerun}"
    assert [s for s in rerun if s.method == "HEAD" and "/blobs/" in s.path], "the rerun asked which blobs exist"
    # only manifests are written: one per tag, and the input-digest tag a fresh runner looks up (registry_reuse)
    puts = [s for s in rerun if s.method == "PUT" and "/manifests/" in s.path]
    assert [s.status for s in puts] == [201] * (len(TAGS) + 1), puts
    assert sorted(s.path.rsplit("/", 1)[-1] for s in puts if "/manifests/in-" not in s.path) == sorted(TAGS), puts
    _, repo = split_repository(images[0].repository)
    ref = tls_registry.client().head_manifest(repo, TAGS[0])
    assert ref is not None and ref.digest == res["svc-a"]["digest"]


def test_a_registry_the_pipeline_does_not_own_is_never_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               tls_registry: TlsRegistry) -> None:
    """Only the embedded registry ([registry] address on loopback) is started by the push pre-flight; another
    address that does not answer (127.0.0.2, or another port of 127.0.0.1) stays down and the check fails."""
    for address in (f"{TLS_HOST}:{free_port()}", f"127.0.0.1:{free_port('127.0.0.1')}"):
        cfg = write_config(tmp_path / f"{address.replace(':', '_')}.toml", registries={"dev": address},
                           namespace="veza", attempts=2, ceiling=0.1, services=("svc-a",),
                           env_keys={"dev": {"registry_ca_file": str(tls_registry.ca_file)}})
        assert ensure_local_registry(cfg, address) is None
        with pytest.raises(StageFailed):
            check_registry_writable(cfg, cfg.env("dev"))
        host, _, port = address.partition(":")
        import socket

        with socket.socket() as s:
            assert s.connect_ex((host, int(port))) != 0, f"something listens on {address}"


def test_skopeo_verifies_the_registry_with_the_environments_ca(tmp_path: Path, tls_registry: TlsRegistry,
                                                               image_factory: Any, run_id: str) -> None:
    """Promotion and multi-platform pushes go through skopeo: it verifies with the same CA file (a temporary
    --cert-dir), and a CA that did not sign the certificate is RegistryTrustError (exit 2), not a retry."""
    from pipeline.tools import docker_push, skopeo

    src = f"{tls_registry.address}/{run_id}/src"
    img = image_factory("svc-a", src, ["1"])
    digest = docker_push.push_tag(src, "1", tls_registry.credentials).digest
    creds = {tls_registry.address: tls_registry.credentials}
    skopeo.copy(f"{src}@{digest}", f"{tls_registry.address}/{run_id}/dst:1", credentials=creds, timeout=60,
                ca_files={tls_registry.address: tls_registry.ca_file})
    ref = tls_registry.client().head_manifest(f"{run_id}/dst", "1")
    assert ref is not None and ref.digest == digest and img.image_id
    with pytest.raises(RegistryTrustError) as got:
        skopeo.copy(f"{src}@{digest}", f"{tls_registry.address}/{run_id}/dst:2", credentials=creds, timeout=60,
                    ca_files={tls_registry.address: _other_ca(tmp_path)})
    assert got.value.exit_code == 2 and "certificate" in got.value.message
