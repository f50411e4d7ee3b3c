"""A real Deployment on the local cluster: an image pushed to a loopback registry, deployed by digest, pulled by
the kubelet through the engine, Ready through a real readiness probe, reached through kubectl port-forward."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.local.cluster import layout
from pipeline.local.registry import LocalRegistry
from tests.integration.cluster_fixtures import KUBECTL, TEST_REGISTRY_PORT, free_pf_port, kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.engine, pytest.mark.slow]

HTTPD_GO = r"""package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		name, _ := os.Hostname()
		fmt.Fprintf(w, "hello from %s", name)
	})
	if err := http.ListenAndServe(":8080", nil); err != nil {
		panic(err)
	}
}
"""


@pytest.fixture(scope="module")
def httpd_image(tmp_path_factory: pytest.TempPathFactory, docker_client: object) -> Iterator[tuple[str, str]]:
    """A FROM scratch static Go HTTP server pushed to a loopback registry: (repository, digest)."""
    import docker

    assert isinstance(docker_client, docker.DockerClient)
    run = f"tcluster{int(time.time())}"
    ctx = tmp_path_factory.mktemp("httpd")
    (ctx / "main.go").write_text(HTTPD_GO)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ctx), "CGO_ENABLED": "0", "GO111MODULE": "off",
           "GOCACHE": str(layout.GOCACHE), "GOFLAGS": ""}
    subprocess.run(["go", "build", "-ldflags", "-s -w", "-o", str(ctx / "httpd"), str(ctx / "main.go")],
                   check=True, env=env, timeout=600, capture_output=True)
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY httpd /httpd\nEXPOSE 8080\nENTRYPOINT ["/httpd"]\n')
    repo = f"127.0.0.1:{TEST_REGISTRY_PORT}/veza-test/httpd"
    with LocalRegistry(TEST_REGISTRY_PORT, root=tmp_path_factory.mktemp("registry")) as reg:
        assert reg.address == f"127.0.0.1:{TEST_REGISTRY_PORT}"
        image, _ = docker_client.images.build(path=str(ctx), tag=f"{repo}:{run}", labels={"veza.pipeline.run": run},
                                              rm=True)
        docker_client.images.push(repo, tag=run)
        digest = docker_client.images.get_registry_data(f"{repo}:{run}").id
        assert digest.startswith("sha256:")
        # Remove the local copy: the kubelet must pull it from the registry through the engine.
        docker_client.images.remove(image.id, force=True)
        yield repo, digest
        for img in docker_client.images.list(filters={"label": f"veza.pipeline.run={run}"}):
            docker_client.images.remove(img.id, force=True)


@pytest.fixture
def namespace(local_cluster: Path, run_id: str) -> Iterator[str]:
    ns = f"veza-{run_id}"
    kubectl(local_cluster, "create", "namespace", ns)
    yield ns
    # Wait: the pods' containers must be gone before the module removes the image they run.
    kubectl(local_cluster, "delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False, timeout=150)


def _deployment(name: str, image: str, probe_path: str) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "web", "image": image, "imagePullPolicy": "Always",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": probe_path, "port": 8080},
                                   "periodSeconds": 1, "failureThreshold": 1},
            }]}}},
    })


def test_deployment_by_digest_becomes_ready_and_port_forward_reaches_it(
        local_cluster: Path, namespace: str, httpd_image: tuple[str, str]) -> None:
    repo, digest = httpd_image
    ref = f"{repo}@{digest}"
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-", input=_deployment("web", ref, "/health"))
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-", input=_deployment("broken", ref, "/nope"))
    kubectl(local_cluster, "-n", namespace, "rollout", "status", "deploy/web", "--timeout=120s", timeout=150)

    pods = json.loads(kubectl(local_cluster, "-n", namespace, "get", "pods", "-l", "app=web", "-o", "json").stdout)
    assert len(pods["items"]) == 1
    pod = pods["items"][0]
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds["Ready"] == "True"
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True and status["imageID"].endswith(digest)  # the digest the kubelet pulled

    # The same image with a probe on a path that answers 404 must stay NotReady: the probe is real.
    deadline = time.monotonic() + 60
    events = ""
    while time.monotonic() < deadline:
        events = kubectl(local_cluster, "-n", namespace, "get", "events", "--field-selector", "reason=Unhealthy",
                         "-o", "jsonpath={.items[*].message}").stdout
        if "404" in events:
            break
        time.sleep(1)
    assert "404" in events
    broken = json.loads(kubectl(local_cluster, "-n", namespace, "get", "deploy", "broken", "-o", "json").stdout)
    assert broken["status"].get("readyReplicas", 0) == 0

    port = free_pf_port()
    pf = subprocess.Popen([KUBECTL, "--kubeconfig", str(local_cluster), "-n", namespace,
                           "port-forward", "--address", "127.0.0.1", "deploy/web", f"{port}:8080"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert pf.stdout is not None
        first = pf.stdout.readline()
        assert "Forwarding from 127.0.0.1" in first, first
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.read().decode() == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=10) as r:
            assert r.read().decode() == f"hello from {pod['metadata']['name']}"
    finally:
        pf.terminate()
        pf.wait(timeout=10)
