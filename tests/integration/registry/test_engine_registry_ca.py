"""The engine checks a registry's certificate against the CA the pipeline gives the node, on an address that is not
loopback (the engine treats 127.0.0.0/8 as insecure: no check there, so the 127.0.0.2 registry cannot show it).

A network namespace made here (veza-ca-<hex>) holds Debian's docker-registry with TLS (a CA made here, IP SAN) on
10.250.26.2:19240; a veth pair joins it to the host's namespace as 10.250.26.1/30, so only this test's traffic
uses that /30. The machine's engine (the local cluster node's runtime, dockershim) pushes to it:
- without the node's trust: refused, one RegistryTrustError (exit 2) naming the registry and the certs.d fix;
- after registry_trust.node_trusts(env) (what `invoke cluster-up --env ENV` writes from registry_ca_file): pushed;
- after forget: refused again (the engine reads certs.d at each request: the check is really the CA's).
The namespace, the veth pair, the registry, the trust file and the image are removed afterwards.
"""

from __future__ import annotations

import dataclasses
import io
import json
import secrets
import socket
import ssl
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import RegistryTrustError
from pipeline.core.paths import ROOT
from pipeline.local.cluster import registry_trust
from pipeline.tools import docker_push
from tests.integration.registry_fixtures import remove_run_images
from tests.integration.tls_registry_fixtures import Pki

pytestmark = [pytest.mark.engine, pytest.mark.registry]

HOST_SIDE, NS_SIDE, PORT = "10.250.26.1", "10.250.26.2", 19240


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=30, capture_output=True)


def _tls_answers(ca: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    ctx = ssl.create_default_context(cafile=str(ca))
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((NS_SIDE, PORT), timeout=2) as s, ctx.wrap_socket(s, server_hostname=NS_SIDE):
                return True
        except OSError:
            time.sleep(0.2)
    return False


@pytest.fixture
def netns_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(address, CA file) of a TLS registry inside a network namespace made here; all removed afterwards."""
    tag = secrets.token_hex(2)
    ns, veth_host, veth_ns = f"veza-ca-{tag}", f"vzca{tag}h", f"vzca{tag}n"
    pki = Pki.make(tmp_path / "pki")
    cert, key = pki.issue(NS_SIDE, tmp_path / "tls")
    config = tmp_path / "registry.json"
    config.write_text(json.dumps({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"{NS_SIDE}:{PORT}", "tls": {"certificate": str(cert), "key": str(key)}}}))
    proc: subprocess.Popen[bytes] | None = None
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", veth_host, "type", "veth", "peer", "name", veth_ns)
        _ip("link", "set", veth_ns, "netns", ns)
        _ip("addr", "add", f"{HOST_SIDE}/30", "dev", veth_host)
        _ip("link", "set", veth_host, "up")
        _ip("-n", ns, "addr", "add", f"{NS_SIDE}/30", "dev", veth_ns)
        _ip("-n", ns, "link", "set", veth_ns, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        log = (tmp_path / "registry.log").open("wb")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "docker-registry", "serve", str(config)],
                                stdout=log, stderr=subprocess.STDOUT)
        assert _tls_answers(pki.ca_file, 30), (tmp_path / "registry.log").read_text()[-2000:]
        yield f"{NS_SIDE}:{PORT}", pki.ca_file
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        subprocess.run(["ip", "link", "del", veth_host], timeout=30, capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], timeout=30, capture_output=True, check=False)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    assert ns not in listed, listed


@pytest.fixture
def small_image(docker_client: Any, run_id: str) -> Iterator[Any]:
    """A one-file FROM scratch image labelled for this run; its tags removed afterwards."""
    dockerfile = f"FROM scratch\nCOPY f /f\nLABEL veza.pipeline.run={run_id}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("f", run_id.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    image, _ = docker_client.images.build(fileobj=buf, custom_context=True, rm=True, pull=False,
                                          labels={"veza.pipeline.run": run_id})
    try:
        yield image
    finally:
        remove_run_images(docker_client, run_id)


def test_the_engine_pushes_to_a_non_loopback_tls_registry_only_with_the_ca_the_pipeline_gives_the_node(
        netns_registry: tuple[str, Path], small_image: Any, run_id: str) -> None:
    address, ca = netns_registry
    env = dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False).env("dev"),
                              registry=address, registry_ca_file=ca)
    repository = f"{address}/veza-test/ca-{run_id}"
    small_image.tag(repository, "1")
    trust = registry_trust.trust_path(env.name, address)
    assert not trust.exists(), trust
    try:
        with pytest.raises(RegistryTrustError) as refused:
            docker_push.push_tag(repository, "1", None)
        assert address in refused.value.message and refused.value.exit_code == 2, refused.value.message
        assert registry_trust.node_trusts(env) == trust
        pushed = docker_push.push_tag(repository, "1", None)
        assert pushed.digest.startswith("sha256:")
    finally:
        registry_trust.forget(env.name, address)
    assert not trust.exists() and not trust.parent.exists()
    with pytest.raises(RegistryTrustError):
        docker_push.push_tag(repository, "1", None)
