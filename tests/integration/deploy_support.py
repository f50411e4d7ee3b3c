"""Helpers of the deploy tests (their fixtures are registered through deploy_fixtures.py).

A real deploy target: the local cluster, a test registry on 127.0.0.1:5300-5349 holding
the project's service images (pushed by digest), and PostgreSQL/Redis/NATS running as Deployments in a
veza-test-* namespace from the local infra images (`invoke bases`), copied into the test registry and
run by digest (pinned_infra_images). The environment generates its Secret
(`generate_secrets = true`), as the local environment does.

VEZA_DEPLOY_TEST_PORTS=LO-HI (e.g. 19700-19749) moves every port of this area into that range (the last 10
for the test registry, the others for port-forwards); VEZA_DEPLOY_TEST_NAMESPACE_PREFIX replaces "veza-test".

The cluster has no DNS add-on: the chart's infra hosts are set to the infra Services' ClusterIPs
(reached through kube-proxy), exactly what a values file does for infra outside the cluster.
Port-forwards use 127.0.0.1:18200-18299 (VEZA_PORT_FORWARD_PORTS).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import Config, Environment, load_config
from pipeline.core.manifest import Manifest
from pipeline.core.paths import ROOT, TOOLS_BIN
from pipeline.local.infra import ensure_local_infra
from pipeline.local.registry import LocalRegistry
from pipeline.tools.kubectl import PORT_RANGE_ENV, KubeTarget
from tests.integration.build_records import built_record
from tests.ports import first_free, worker_block, worker_share


def _ports() -> tuple[range, str]:
    """(test registry ports, port-forward range LO-HI); under pytest-xdist, this worker's share of each
    (tests/ports.py: two cluster lanes deploy at once)."""
    spec = os.environ.get("VEZA_DEPLOY_TEST_PORTS", "").strip()
    if not spec:
        registry, forwards = range(5300, 5350), range(18200, 18300)
    else:
        lo, hi = (int(x) for x in spec.split("-"))
        registry, forwards = range(hi - 9, hi + 1), range(lo, hi - 9)
    block = worker_block(forwards)
    return worker_share(registry), f"{block.start}-{block.stop - 1}"


REGISTRY_PORTS, PF_RANGE = _ports()
NS_PREFIX = os.environ.get("VEZA_DEPLOY_TEST_NAMESPACE_PREFIX", "veza-test")
KUBECTL = str(TOOLS_BIN / "kubectl")


def sh(*argv: str, timeout: float = 300, input: str | None = None, check: bool = True) -> str:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:4])}… failed ({res.returncode}): {res.stderr.strip()[-600:]}")
    return res.stdout


def kc(kubeconfig: Path, *args: str, timeout: float = 120, input: str | None = None, check: bool = True) -> str:
    return sh(KUBECTL, "--kubeconfig", str(kubeconfig), *args, timeout=timeout, input=input, check=check)


@dataclass
class DeployTarget:
    cfg: Config
    env: Environment
    kubeconfig: Path
    namespace: str
    registry: str
    digests: dict[str, str]
    infra_values: Path
    state: Path

    def manifest(self) -> Manifest:
        """The target's Release manifest: each digest pushed and signed with the environment's key (the deploy
        verifies every image it applies: pipeline/stages/deploy/trust_gate.py)."""
        path = self.state / "manifest.json"
        if path.exists():
            return Manifest.load(path)
        m = Manifest.new(path, env=self.env.name, release_id=f"test-{self.namespace}", version={"sha": TEST_COMMIT})
        for svc, digest in self.digests.items():
            m.set_service(svc, repository=self.repository(svc), tags=["test"], input_digest="sha256:test")
            m.record(svc, "build", built_record("sha256:" + "b" * 64, TEST_COMMIT))
            m.record(svc, "push", {"status": "pushed", "digest": digest, "tags_pushed": ["test"]})
        sign_manifest(self.cfg, self.env, m)
        return m

    def repository(self, service: str) -> str:
        return f"{self.registry}/veza-test/{service}"


TEST_COMMIT = "d" * 40   # the commit the deploy tests' manifests record (their provenance names it)


def with_test_keys(cfg: Config, key_dir: Path) -> Config:
    """`cfg` with its key pairs under `key_dir` (a test's own, never the machine's key_dir)."""
    return dataclasses.replace(cfg, signing=dataclasses.replace(cfg.signing, key_dir=key_dir))


def sign_manifest(cfg: Config, env: Environment, m: Manifest) -> None:
    """Sign and attest every pushed digest of `m` with env's key (made on first use: auto_key), as the sign
    stage does; the manifest must record a commit (TEST_COMMIT)."""
    from pipeline.core.reporter import PlainReporter
    from pipeline.stages.sign import sign_images
    from pipeline.trust import envkeys

    if not envkeys.key_paths(cfg, env).private.is_file():
        envkeys.keygen(cfg, env)
    sign_images(cfg, dataclasses.replace(env, local_infra=False), m, PlainReporter(sink=lambda _: None))


def _free_registry_port() -> int:
    return first_free(REGISTRY_PORTS)


def _service_image(cfg: Config, name: str, run: str) -> str:
    """Build the service's image from its Dockerfile with the offline bases and the pipeline's builder."""
    from pipeline.tools import buildkit

    svc = cfg.service(name)
    tag = f"veza-test-deploy/{name}:{run}"
    args = {cfg.bases[b].build_arg: cfg.bases[b].local for b in svc.bases if cfg.bases[b].build_arg}
    lines: list[str] = []
    iid = Path(f"/tmp/{run}-{name}.iid")
    rc = buildkit.build(buildkit.detect(cfg.build.builder), context=svc.context, dockerfile=svc.dockerfile,
                        tags=[tag], build_args=args, labels={"veza.pipeline.run": run}, no_cache=False,
                        on_line=lines.append, timeout=1200, iidfile=iid)
    iid.unlink(missing_ok=True)
    iid.with_suffix(".legacy.Dockerfile").unlink(missing_ok=True)
    assert rc == 0, f"build of {name} failed:\n" + "\n".join(lines[-30:])
    return tag


@pytest.fixture(scope="session")
def deploy_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reg = LocalRegistry(_free_registry_port(), root=tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        yield reg.address
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def pushed_images(deploy_registry: str) -> Iterator[dict[str, str]]:
    """service → digest in the test registry (built from dockerfiles/, copied with skopeo)."""
    cfg = load_config()
    run = "d" + uuid.uuid4().hex[:8]
    digests: dict[str, str] = {}
    built: list[str] = []
    try:
        for svc in cfg.services:
            tag = _service_image(cfg, svc.name, run)
            built.append(tag)
            dest = f"docker://{deploy_registry}/veza-test/{svc.name}:test"
            digest_file = Path(f"/tmp/{run}-{svc.name}.digest")
            sh("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file),
               f"docker-daemon:{tag}", dest)
            digests[svc.name] = digest_file.read_text().strip()
            digest_file.unlink()
        yield digests
    finally:
        for tag in built:
            sh("docker", "rmi", tag, check=False)


_infra_pushed: dict[str, dict[str, str]] = {}


def pinned_infra_images(cfg: Config, registry: str) -> dict[str, str]:
    """[infra.NAME] → `repository@sha256:…` of the local infra images (`invoke bases`), for the infra documents
    (they take only pinned images). A digest the engine already holds for the image (RepoDigests, e.g. from a
    release's push) and whose registry still serves it is used as it is: the kubelet then runs the local image
    without a pull. Otherwise the image is copied into `registry` by skopeo (about a minute for the three here),
    once per registry and session."""
    from pipeline.core.errors import PipelineError
    from pipeline.tools import docker
    from pipeline.tools.registry_api import RegistryClient, split_repository

    if registry not in _infra_pushed:
        out: dict[str, str] = {}
        from pipeline.core.release_images import dependency_infra

        for name in dependency_infra(cfg):   # what the chart uses (not the embedded Prometheus)
            local = cfg.bases[cfg.infra[name].base].local
            for held in (docker.inspect(local) or {}).get("RepoDigests") or []:
                address, path = split_repository(held.partition("@")[0])
                try:
                    served = RegistryClient(address).head_manifest(path, held.partition("@")[2])
                except PipelineError:   # a registry that is gone: copy the image instead
                    served = None
                if served is not None:
                    out[name] = held
                    break
            else:
                repo = f"{registry}/veza-test/infra/{name}"
                digest_file = Path(f"/tmp/veza-test-infra-{uuid.uuid4().hex[:8]}.digest")
                sh("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file),
                   f"docker-daemon:{local}", f"docker://{repo}:test", timeout=600)
                out[name] = f"{repo}@{digest_file.read_text().strip()}"
                digest_file.unlink()
        _infra_pushed[registry] = out
    return _infra_pushed[registry]


def make_target(kubeconfig: Path, registry: str, digests: dict[str, str], state: Path,
                label: str) -> DeployTarget:
    """A veza-test-* namespace with the Secret and the infra running, and the config pointing at it."""
    ns = f"{NS_PREFIX}-{label}-{uuid.uuid4().hex[:6]}"
    kc(kubeconfig, "create", "namespace", ns)
    kc(kubeconfig, "label", "namespace", ns, "veza.pipeline.test=deploy")
    base = load_config()
    # The same infra the local environment runs beside a release (pipeline/local/infra.py).
    infra_values = ensure_local_infra(base, KubeTarget(kubeconfig, "", ns), "veza-secrets", state,
                                      pinned_infra_images(base, registry), say=lambda _: None)
    env = dataclasses.replace(base.env("local"), namespace=ns, helm_release="veza", local_infra=False,
                              generate_secrets=True, values_file=ROOT / "helm/veza/values-local.yaml")
    cfg = with_test_keys(dataclasses.replace(base, state_dir=state, environments={"local": env}), state / "keys")
    return DeployTarget(cfg=cfg, env=env, kubeconfig=kubeconfig, namespace=ns, registry=registry,
                        digests=digests, infra_values=infra_values, state=state)


def remove_target(t: DeployTarget) -> None:
    """Delete the target's namespace (its release and infra go with it), its PersistentVolumes and their host
    directories (tests/e2e/release_support.remove_release). Its name has a random suffix: no wait for it to go."""
    from tests.e2e.release_support import remove_release

    remove_release(t.kubeconfig, t.namespace, wait=False)


@pytest.fixture
def port_range(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(PORT_RANGE_ENV, PF_RANGE)
    return PF_RANGE


class LinesReporter:
    """A Reporter (pipeline.core.reporter) that keeps every line it is given, detail included, as a user running
    verbose would see them: the deploy tests assert on what the user is told."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warn(self, msg: str) -> None:
        self.lines.append(f"warning: {msg}")

    def detail(self, msg: str) -> None:
        self.lines.append(msg)

    def stage_started(self, stage: str) -> None:
        self.lines.append(f"── {stage}")

    def stage_finished(self, stage: str, status: str, detail: str = "") -> None:
        self.lines.append(f"── {stage}: {status} {detail}".rstrip())

    def step(self, stage: str, service: str, text: str, state: str = "running") -> None:
        self.lines.append(f"  {service}: {state} — {text}")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
