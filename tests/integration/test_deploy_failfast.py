"""On the local cluster: the deploy stops within seconds on what cannot recover (an unbound claim, an image that
cannot be pulled, a crash loop), names the object and the reason, and leaves nothing behind (a first install is
removed); the Pod Security gate stops a privileged container with exit 3 before anything reaches the cluster.

Namespaces veza-d2-ff-*; one tiny image (a static binary that exits 3, ~1 MB, label veza.pipeline.run) built,
pushed to the machine's registry as 127.0.0.1:5000/veza-d2/exits and removed from the engine afterwards; a
tiny image pushed as veza-d2/unpullable (through the registry API) whose layer blob is then deleted; every image
signed with a key made in the test's tmp dir (the deploy verifies each image it applies);
port-forwards 127.0.0.1:19750-19799.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import Config, load_config
from pipeline.core.errors import DeployFailed, PolicyBlocked
from pipeline.core.manifest import Manifest
from pipeline.core.paths import ROOT
from pipeline.tools import helm
from pipeline.tools.kubectl import KubeTarget
from tests.e2e.release_support import remove_release
from tests.integration.build_records import built_record
from tests.integration.deploy_support import TEST_COMMIT, LinesReporter, sign_manifest, with_test_keys

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster]
REGISTRY = "127.0.0.1:5000"
HELM_TIMEOUT_S = 300  # Helm's default: fail fast must beat it by far
FAST_S = 90


@dataclasses.dataclass
class Target:
    cfg: Config
    kubeconfig: Path
    namespace: str
    state: Path

    def manifest(self, service: str, repository: str, digest: str, *, sign: bool = True) -> Manifest:
        """One service pushed and (`sign`) signed with the environment's key (the deploy verifies what it applies;
        an image the registry does not serve cannot be signed)."""
        m = Manifest.new(self.state / "manifest.json", env="local", release_id=f"test-{self.namespace}",
                         version={"sha": TEST_COMMIT})
        m.set_service(service, repository=repository, tags=["test"], input_digest="sha256:test")
        m.record(service, "build", built_record("sha256:" + "b" * 64, TEST_COMMIT))
        m.record(service, "push", {"status": "pushed", "digest": digest, "tags_pushed": ["test"]})
        if sign:
            sign_manifest(self.cfg, self.cfg.env("local"), m)
        return m

    def deploy(self, m: Manifest, service: str, out: LinesReporter, extra: list[Path] | None = None) -> None:
        from pipeline.stages.deploy import deploy_release

        t0 = time.monotonic()
        try:
            deploy_release(self.cfg, self.cfg.env("local"), m, [service], kubeconfig=self.kubeconfig,
                           timeout_s=HELM_TIMEOUT_S, extra_values=extra or [], reporter=out)
        finally:
            print(f"deploy of {service} ended after {time.monotonic() - t0:.1f}s:\n{out.text}")


@pytest.fixture
def target(local_cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    monkeypatch.setenv("VEZA_PORT_FORWARD_PORTS", "19750-19799")
    ns = f"veza-d2-ff-{uuid.uuid4().hex[:6]}"
    base = load_config(ROOT / "pipeline.toml", check_files=False)
    env = dataclasses.replace(base.env("local"), namespace=ns, local_infra=False, generate_secrets=True)
    cfg = with_test_keys(dataclasses.replace(base, state_dir=tmp_path / "state", environments={"local": env}),
                         tmp_path / "keys")
    try:
        yield Target(cfg, local_cluster, ns, tmp_path / "state")
    finally:
        remove_release(local_cluster, ns)


EXITS_DOCKERFILE = """\
ARG GO_IMAGE
FROM ${GO_IMAGE} AS build
WORKDIR /src
RUN printf 'package main\\nimport "os"\\nfunc main() { os.Exit(3) }\\n' > main.go \\
 && CGO_ENABLED=0 go build -o /exits main.go
FROM scratch
COPY --from=build /exits /exits
USER 1001
ENTRYPOINT ["/exits"]
"""


def _copy_to_registry(tag: str, dest: str, digest_file: Path) -> None:
    res = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file),
                          f"docker-daemon:{tag}", f"docker://{dest}"], timeout=300, capture_output=True, text=True)
    assert res.returncode == 0, f"skopeo copy {tag} → {dest} failed: {res.stderr.strip()}"


@pytest.fixture(scope="module")
def exiting_image(tmp_path_factory: pytest.TempPathFactory, machine_registry: str) -> Iterator[tuple[str, str]]:
    """(repository, digest) of an image whose process exits 3 at once, in the machine's registry."""
    run = "d2ff" + uuid.uuid4().hex[:8]
    ctx = tmp_path_factory.mktemp("exits")
    (ctx / "Dockerfile").write_text(EXITS_DOCKERFILE)
    tag = f"veza-d2/exits:{run}"
    go = load_config(ROOT / "pipeline.toml", check_files=False).bases["golang"].local
    subprocess.run(["docker", "build", "-q", "-t", tag, "--label", f"veza.pipeline.run={run}", "--build-arg",
                    f"GO_IMAGE={go}", str(ctx)], check=True, timeout=600, capture_output=True)
    repo = f"{REGISTRY}/veza-d2/exits"
    digest_file = ctx / "digest"
    try:
        _copy_to_registry(tag, f"{repo}:1", digest_file)
        digest = digest_file.read_text().strip()
        yield repo, digest
    finally:
        # The tag built here, and the copy the kubelet pulled by digest.
        pulled = f"{repo}@{digest_file.read_text().strip()}" if digest_file.exists() else tag
        subprocess.run(["docker", "rmi", "-f", tag, pulled], capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def docs_image(tmp_path_factory: pytest.TempPathFactory, machine_registry: str) -> Iterator[tuple[str, str]]:
    """(repository, digest) of the real veza-docs image (built from its Dockerfile, layer cache), pushed as
    127.0.0.1:5000/veza-d2/veza-docs."""
    from tests.integration.deploy_support import _service_image

    run = "d2ff" + uuid.uuid4().hex[:8]
    tag = _service_image(load_config(ROOT / "pipeline.toml", check_files=False), "veza-docs", run)
    repo = f"{REGISTRY}/veza-d2/veza-docs"
    digest_file = tmp_path_factory.mktemp("docs") / "digest"
    try:
        _copy_to_registry(tag, f"{repo}:1", digest_file)
        yield repo, digest_file.read_text().strip()
    finally:
        pulled = f"{repo}@{digest_file.read_text().strip()}" if digest_file.exists() else tag
        subprocess.run(["docker", "rmi", "-f", tag, pulled], capture_output=True, timeout=120, check=False)


def _assert_fast_failure(exc: DeployFailed, took: float, out: LinesReporter, category: str, target: Target) -> None:
    assert exc.exit_code == 5
    assert took < FAST_S, f"took {took:.0f}s (Helm alone would wait {HELM_TIMEOUT_S}s)\n{out.text}"
    assert f": {category}: " in exc.message, exc.message
    assert "Pod " in exc.message and "stopped after" in exc.message, exc.message
    assert helm.status(KubeTarget(target.kubeconfig, "", target.namespace), "veza") is None, out.text


@pytest.fixture(scope="module")
def unpullable_image(machine_registry: str) -> tuple[str, str]:
    """(repository, digest) of an image the registry serves (its manifest: the trust gate passes once it is
    signed) but whose layer it lost: the kubelet's pull fails. Its content is unique to this run."""
    from pipeline.tools.registry_api import RegistryClient
    from tests.integration.trust.trust_fixtures import push_tiny_image

    client, path = RegistryClient(REGISTRY), "veza-d2/unpullable"
    digest = push_tiny_image(client, path, "1", uuid.uuid4().hex.encode())
    got = client.get_manifest(path, digest)
    assert got is not None
    layer = json.loads(got[1])["layers"][0]["digest"]
    client.request("DELETE", f"/v2/{path}/blobs/{layer}", ok=(202,))
    return f"{REGISTRY}/{path}", digest


def test_an_unbound_claim_stops_the_deploy_within_seconds(target: Target, tmp_path: Path,
                                                          docs_image: tuple[str, str]) -> None:
    repo, digest = docs_image   # signed and served; the pod is never scheduled
    no_class = tmp_path / "no-class.yaml"
    no_class.write_text(yaml.safe_dump({"services": {"veza-stream-server": {
        "persistence": {"storageClassName": "veza-d2-no-such-class"}}}}))
    m = target.manifest("veza-stream-server", repo, digest)
    out, t0 = LinesReporter(), time.monotonic()
    with pytest.raises(DeployFailed) as exc:
        target.deploy(m, "veza-stream-server", out, [no_class])
    _assert_fast_failure(exc.value, time.monotonic() - t0, out, "unbound-claim", target)
    assert "PersistentVolumeClaim veza-stream-server is Pending" in exc.value.message, exc.value.message


def test_an_image_that_cannot_be_pulled_stops_the_deploy_within_seconds(target: Target,
                                                                       unpullable_image: tuple[str, str]) -> None:
    m = target.manifest("veza-docs", *unpullable_image)
    out, t0 = LinesReporter(), time.monotonic()
    with pytest.raises(DeployFailed) as exc:
        target.deploy(m, "veza-docs", out)
    _assert_fast_failure(exc.value, time.monotonic() - t0, out, "image-pull", target)
    # after the kubelet's retries (pull_grace_s), with its own pull error rather than the back-off's text
    assert "Failed to pull image" in exc.value.message, exc.value.message


def test_a_crash_loop_stops_the_deploy_within_seconds(target: Target, exiting_image: tuple[str, str]) -> None:
    m = target.manifest("veza-docs", *exiting_image)
    out, t0 = LinesReporter(), time.monotonic()
    with pytest.raises(DeployFailed) as exc:
        target.deploy(m, "veza-docs", out)
    _assert_fast_failure(exc.value, time.monotonic() - t0, out, "crash-loop", target)


def test_a_crash_loop_in_an_upgrade_is_rolled_back_to_the_serving_revision(
        target: Target, docs_image: tuple[str, str], exiting_image: tuple[str, str]) -> None:
    target.deploy(target.manifest("veza-docs", *docs_image), "veza-docs", LinesReporter())
    kube = KubeTarget(target.kubeconfig, "", target.namespace)
    first = helm.status(kube, "veza")
    assert first is not None and first.status == "deployed"
    (target.state / "manifest.json").unlink()
    out, t0 = LinesReporter(), time.monotonic()
    with pytest.raises(DeployFailed) as exc:
        target.deploy(target.manifest("veza-docs", *exiting_image), "veza-docs", out)
    took = time.monotonic() - t0
    assert took < FAST_S and ": crash-loop: " in exc.value.message, (took, out.text)
    assert f"rolled back to revision {first.revision}" in exc.value.message, exc.value.message
    after = helm.status(kube, "veza")
    assert after is not None and after.status == "deployed" and after.revision > first.revision
    image = subprocess.run([str(ROOT / ".tools/bin/kubectl"), "--kubeconfig", str(target.kubeconfig), "-n",
                            target.namespace, "get", "deployment", "veza-docs", "-o",
                            "jsonpath={.spec.template.spec.containers[0].image}"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert image == "@".join(docs_image), image


def test_a_privileged_container_is_blocked_before_anything_is_applied(target: Target, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "helm", root / "helm")
    deployment = root / "helm/veza/templates/deployment.yaml"
    deployment.write_text(deployment.read_text().replace("privileged: false", "privileged: true"))
    env = dataclasses.replace(target.cfg.env("local"), values_file=root / "helm/veza/values-local.yaml")
    target.cfg = dataclasses.replace(target.cfg, root=root, environments={"local": env})
    # never signed, never served: the Pod Security gate comes first, before the trust check
    m = target.manifest("veza-docs", f"{REGISTRY}/veza-d2/never-used", "sha256:" + "e" * 64, sign=False)
    with pytest.raises(PolicyBlocked) as exc:
        target.deploy(m, "veza-docs", LinesReporter())
    line = exc.value.one_line()
    assert exc.value.exit_code == 3 and "\n" not in line
    assert re.search(r"Deployment (veza-[a-z-]+): spec\.template\.spec\.containers\[0\]\(name=\1\)"
                     r"\.securityContext\.privileged is true", line), line
    assert "(+3 more)" in line, line  # all four services' Deployments
    ns = subprocess.run([str(ROOT / ".tools/bin/kubectl"), "--kubeconfig", str(target.kubeconfig), "get",
                         "namespace", target.namespace, "--ignore-not-found", "-o", "name"],
                        capture_output=True, text=True, timeout=60, check=True).stdout
    assert ns.strip() == "", "the gate must stop the deploy before anything is applied"
