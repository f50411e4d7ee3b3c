"""The cluster pulls from a registry that is not the runner through the environment's pull Secret, and only so.

The TLS + htpasswd registry on 127.0.0.2 (tests/integration/tls_registry_fixtures.py) holds one small image (the
node's own pause image, relabelled for this run), pushed by the pipeline's engine push. The deploy's pull Secret
(pipeline/stages/deploy/prepare.ensure_pull_secret: a kubernetes.io/dockerconfigjson Secret from the environment's
pull variables, given to kubectl on stdin) lets a pod pull it by digest; the same pod without the Secret does not
(the node's engine has no other credential). The node trusts the registry's CA through what `cluster_up(env)`
writes for the environment (pipeline/local/cluster/registry_trust.py: the engine's certs.d, the node being
dockershim on it). Runs under the cluster lock (flock /work/wt/cluster.lock …); everything is removed
afterwards.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import load_config
from pipeline.core.paths import ROOT
from pipeline.local.cluster import cluster_up, registry_trust
from pipeline.local.cluster.layout import PAUSE_IMAGE
from pipeline.stages.deploy import prepare
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.tools import docker_push
from pipeline.tools.kubectl import KubeTarget
from tests.integration.cluster_fixtures import kubectl
from tests.integration.deploy_support import LinesReporter
from tests.integration.registry_fixtures import remove_run_images
from tests.integration.tls_registry_fixtures import TlsRegistry

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster]
PULL_USER, PULL_PASSWORD = "VEZA_TEST_PULL_USER", "VEZA_TEST_PULL_PASSWORD"


@pytest.fixture
def pushed_image(tls_registry: TlsRegistry, docker_client: Any, local_cluster: Path, run_id: str) -> Iterator[str]:
    """repository@digest of a small runnable image in the TLS registry, absent from the engine (a pod must pull)."""
    dockerfile = f"FROM {PAUSE_IMAGE}\nLABEL veza.pipeline.run={run_id}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    buf.seek(0)
    image, _ = docker_client.images.build(fileobj=buf, custom_context=True, rm=True, pull=False,
                                          labels={"veza.pipeline.run": run_id})
    repository = f"{tls_registry.address}/veza-test/pull-{run_id}"
    try:
        image.tag(repository, "1")
        pushed = docker_push.push_tag(repository, "1", tls_registry.credentials)
        remove_run_images(docker_client, run_id)   # the node must pull it from the registry
        yield f"{repository}@{pushed.digest}"
    finally:
        remove_run_images(docker_client, run_id)   # what the node pulled carries the same label


@pytest.fixture
def namespace(local_cluster: Path) -> Iterator[str]:
    ns = f"veza-test-pull-{uuid.uuid4().hex[:6]}"
    kubectl(local_cluster, "create", "namespace", ns)
    try:
        yield ns
    finally:
        kubectl(local_cluster, "delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False, timeout=150)


def _pod(name: str, image: str, pull_secret: str | None) -> str:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": image, "imagePullPolicy": "Always"}],
                            "restartPolicy": "Never", "automountServiceAccountToken": False,
                            "terminationGracePeriodSeconds": 0}
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": pull_secret}]
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def _waiting(kubeconfig: Path, ns: str, pod: str, timeout: float) -> tuple[str, str]:
    """(state, reason/message) of the pod's container once it runs or stops pulling."""
    deadline = time.monotonic() + timeout
    last = ("", "")
    while time.monotonic() < deadline:
        doc = json.loads(kubectl(kubeconfig, "-n", ns, "get", "pod", pod, "-o", "json").stdout)
        for st in (doc.get("status") or {}).get("containerStatuses") or []:
            state = st.get("state") or {}
            if "running" in state:
                return "running", ""
            waiting = state.get("waiting") or {}
            last = ("waiting", f"{waiting.get('reason', '')}: {waiting.get('message', '')}")
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                return last
        time.sleep(0.5)
    return last


def test_the_cluster_pulls_by_digest_through_the_pull_secret_and_not_without_it(
        local_cluster: Path, tls_registry: TlsRegistry, pushed_image: str, namespace: str,
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    base = load_config(ROOT / "pipeline.toml", check_files=False)
    env = dataclasses.replace(base.env("dev"), registry=tls_registry.address, namespace=namespace,
                              registry_ca_file=tls_registry.ca_file, pull_secret="registry-secret",
                              pull_username_env=PULL_USER, pull_password_env=PULL_PASSWORD)
    monkeypatch.setenv(PULL_USER, tls_registry.username)
    monkeypatch.setenv(PULL_PASSWORD, tls_registry.password)
    rt = ReleaseTarget(env=env, kube=KubeTarget(local_cluster, "", namespace), release="veza", external=False)
    reporter = LinesReporter()
    trust = registry_trust.trust_path(env.name, env.registry)
    assert not trust.exists(), trust
    request.addfinalizer(lambda: registry_trust.forget(env.name, env.registry))
    cluster_up(env, say=reporter.info)   # the local cluster, running: its node now trusts dev's registry CA
    assert trust.read_text() == tls_registry.ca_file.read_text(), reporter.text
    prepare.ensure_pull_secret(rt, reporter)
    assert tls_registry.password not in reporter.text
    secret = json.loads(kubectl(local_cluster, "-n", namespace, "get", "secret", "registry-secret", "-o",
                                "json").stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"

    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-", input=_pod("without", pushed_image, None))
    state, why = _waiting(local_cluster, namespace, "without", 90)
    assert state == "waiting" and "ImagePull" in why, (state, why)   # no other credential reaches the node
    assert any(w in why.lower() for w in ("unauthorized", "authentication required", "no basic auth")), why

    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-", input=_pod("with", pushed_image, "registry-secret"))
    state, why = _waiting(local_cluster, namespace, "with", 120)
    assert state == "running", why
    doc = json.loads(kubectl(local_cluster, "-n", namespace, "get", "pod", "with", "-o", "json").stdout)
    assert doc["status"]["containerStatuses"][0]["imageID"].endswith(pushed_image.split("@")[1])
