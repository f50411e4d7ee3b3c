"""A fresh runner reads an image reused from a registry on another host, with what the pipeline holds for it:
the smoke test's pull by digest carries the registry's credentials (a CI job has no `docker login`), and Trivy's
scan in the registry trusts the environment's CA file (`registry_ca_file`), not only the system store.

The registry is the TLS + htpasswd one on 127.0.0.2 (tls_registry_fixtures.py); the image a tiny one this test
builds, pushes and removes from the engine, as a new runner's engine has none. Without the credentials the engine's
pull is refused, and without the CA file Trivy cannot verify the registry: so each passes only with what it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import StageFailed
from pipeline.tools import docker, docker_push, trivy
from tests.integration.reuse_support import remove_image
from tests.integration.tls_registry_fixtures import TlsRegistry

pytestmark = [pytest.mark.engine, pytest.mark.registry]


def test_a_reused_image_is_pulled_with_the_registrys_credentials_and_scanned_trusting_its_ca(
        tls_registry: TlsRegistry, image_factory: Any, run_id: str, tmp_path: Path) -> None:
    repository = f"{tls_registry.address}/fresh-{run_id}/tiny"
    built = image_factory("tiny", repository, ["t1"])
    pushed = docker_push.push_tag(repository, "t1", tls_registry.credentials)
    ref = f"{repository}@{pushed.digest}"
    remove_image(built.image_id)   # the runner is fresh: its engine has never held the image
    assert docker.image_id(ref) is None

    ok, why = docker.pull_image(ref, timeout=120)   # what `docker pull` alone gets: no credentials
    assert not ok and docker.image_id(ref) is None, why
    ok, why = docker.pull_image(ref, timeout=120, username=tls_registry.username, password=tls_registry.password)
    assert ok, why
    assert docker.image_id(ref) == built.image_id   # the engine names it by the ID the build recorded
    assert tls_registry.password not in why
    remove_image(built.image_id)

    kw: dict[str, Any] = {"cache_dir": tmp_path / "trivy", "scanners": ("secret",), "image_src": "remote",
                          "username": tls_registry.username, "password": tls_registry.password, "timeout": 300}
    with pytest.raises(StageFailed) as refused:   # the system store does not know the test's CA
        trivy.scan_image(ref, tmp_path / "refused.json", **kw)
    assert "certificate" in refused.value.message.lower() or "x509" in refused.value.message.lower(), \
        refused.value.message
    report = trivy.scan_image(ref, tmp_path / "report.json", ca_file=str(tls_registry.ca_file), **kw)
    assert report["Metadata"]["ImageID"] == built.image_id
    assert docker.image_id(ref) is None   # read in the registry, never through the engine
