"""The second engine (remote_engine) is what CI jobs get from a docker:dind service, and the pipeline's adapters
reach it only that way: TCP, TLS with a client certificate, even on a machine whose environment names another CA
bundle for requests (REQUESTS_CA_BUNDLE, as here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.remote_engine import DEBIAN_DOCKER, RemoteEngine

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_only_a_client_with_the_certificate_gets_in(remote_engine: RemoteEngine, tmp_path: Path) -> None:
    assert remote_engine.docker("version", "--format", "{{.Server.Version}}").returncode == 0
    no_cert = tmp_path / "ca-only"
    no_cert.mkdir()
    shutil.copy(remote_engine.cert_path / "ca.pem", no_cert / "ca.pem")
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": remote_engine.host, "DOCKER_TLS_VERIFY": "1",
           "DOCKER_CERT_PATH": str(no_cert)}
    cp = subprocess.run([DEBIAN_DOCKER, "version", "--format", "{{.Server.Version}}"], env=env, capture_output=True,
                        text=True, timeout=60, check=False)
    assert cp.returncode != 0, cp.stdout


def test_the_pipelines_adapters_reach_the_tls_engine(remote_engine: RemoteEngine, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tools import docker, skopeo

    for k, v in remote_engine.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")   # not the engine's CA
    docker.client.cache_clear()
    try:
        c = docker.client()
        assert c.ping()
        # A build on that engine from a base its mirror serves (no network inside the build).
        dockerfile = "FROM debian:bookworm-slim\nRUN echo remote > /where\n"
        build = remote_engine.docker("build", "-q", "--label", "veza.test=remote-engine", "-",
                                     input=dockerfile.encode(), timeout=600)
        assert build.returncode == 0, build.stderr[-2000:]
        image_id = build.stdout.decode().strip()
        assert c.images.get(image_id).id == image_id
        # skopeo reads the image from the TLS engine (--src-daemon-host with DOCKER_CERT_PATH's certificate).
        layout = skopeo.export_oci(image_id, tmp_path / "layout", timeout=300)
        assert layout.digest.startswith("sha256:")
    finally:
        docker.client.cache_clear()
