"""`invoke ci-local`: the GitLab template run job by job (gitlab-ci-local, shell executor, each job in its own copy,
sharing only artifacts), against an engine that is not the machine's: the second dockerd over TCP+TLS
(tests/integration/remote_engine.py), and a registry that is not the machine's: the TLS + htpasswd registry on
127.0.0.2 (tests/integration/tls_registry_fixtures.py), which the clone's pipeline.toml names for dev as a team
would (dev_registry_config: its CA as the file variable VEZA_DEV_REGISTRY_CA_FILE, push and pull credentials by
variable names). The cluster is reached only through the kubeconfig the CI variable holds (the local cluster's,
its context renamed, as a secret store would hold it); what its operators provide (namespace, Secret,
PostgreSQL/Redis/NATS, a volume, and the node's trust of dev's registry CA through `invoke cluster-up --env dev`,
pipeline/local/cluster/registry_trust.py) is set up by the test as them.

- branch pipeline: lint → build → scan, smoke → push → deploy-dev; then `invoke status --env dev` exit 0, every
  service on its manifest digest; every release pod runs an image of the TLS registry, pulled through the
  dockerconfigjson pull Secret (the node's engine has no other credential for it).
- tag pipeline without its signing variables: refused at once, one line naming them, exit 2, no job run.
Namespace veza-dev; port-forwards on 127.0.0.1:19750-19799 (release_support).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.local.cluster import registry_trust
from tests.e2e.release_support import (
    clone_repo,
    flat,
    invoke,
    kubectl,
    provide_as_operators,
    remove_release,
    status_matches,
    tag_release,
)
from tests.integration.remote_engine import RemoteEngine
from tests.integration.tls_registry_fixtures import TlsRegistry

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "veza-dev"
CONTEXT = "veza-ci-dev"
PULL_SECRET = "registry-secret"
# What the team names in pipeline.toml and sets in GitLab (README, "CI").
DEV_REGISTRY_KEYS = {"registry_ca_file": "$VEZA_DEV_REGISTRY_CA_FILE",
                     "registry_username_env": "VEZA_DEV_PUSH_USER", "registry_password_env": "VEZA_DEV_PUSH_PASSWORD",
                     "pull_username_env": "VEZA_DEV_PULL_USER", "pull_password_env": "VEZA_DEV_PULL_PASSWORD",
                     "pull_secret": PULL_SECRET}


def dev_registry_config(clone: Path, address: str) -> None:
    """The clone's [environments.dev] pushes to `address` and the cluster pulls from it (DEV_REGISTRY_KEYS)."""
    text = (clone / "pipeline.toml").read_text()
    head, sep, rest = text.partition("[environments.dev]\n")
    body, nxt, tail = rest.partition("\n[")
    assert sep and nxt, "pipeline.toml has no [environments.dev] table followed by another"
    lines = [ln for ln in body.splitlines() if ln.split("=")[0].strip() not in ("registry", *DEV_REGISTRY_KEYS)]
    lines += [f'registry = "{address}"', *(f'{k} = "{v}"' for k, v in DEV_REGISTRY_KEYS.items())]
    (clone / "pipeline.toml").write_text(head + sep + "\n".join(lines) + "\n" + nxt + tail)


def registry_env(tls: TlsRegistry) -> dict[str, str]:
    """The variables DEV_REGISTRY_KEYS names, as the team sets them (one htpasswd user pushes and pulls here)."""
    return {"VEZA_DEV_REGISTRY_CA_FILE": str(tls.ca_file), "VEZA_DEV_PUSH_USER": tls.username,
            "VEZA_DEV_PUSH_PASSWORD": tls.password, "VEZA_DEV_PULL_USER": tls.username,
            "VEZA_DEV_PULL_PASSWORD": tls.password}


@pytest.fixture
def node_trusts_dev(tls_registry: TlsRegistry, local_cluster: Path) -> Iterator[Path]:
    """Where the node's trust of dev's registry CA will be written (by `invoke cluster-up --env dev`, as the
    cluster's operators run it); removed afterwards."""
    path = registry_trust.trust_path("dev", tls_registry.address)
    assert not path.exists(), path
    try:
        yield path
    finally:
        registry_trust.forget("dev", tls_registry.address)


def _secret_kubeconfig(local_cluster: Path, dest: Path) -> Path:
    """The local cluster's kubeconfig as a CI secret would hold it: its own context name, nothing else."""
    doc = yaml.safe_load(local_cluster.read_text())
    doc["contexts"][0]["name"] = CONTEXT
    doc["current-context"] = CONTEXT
    dest.write_text(yaml.safe_dump(doc))
    dest.chmod(0o600)
    return dest


def _default_class(kubeconfig: Path) -> str:
    """The class a claim that names none gets (the cluster's default StorageClass), "" when there is none: dev's
    values name no class, so the operators' volume must be of this one to bind."""
    classes = json.loads(kubectl(kubeconfig, "get", "storageclass", "-o", "json"))["items"]
    default = [c["metadata"]["name"] for c in classes if c["metadata"].get("annotations", {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true"]
    return default[0] if default else ""


@pytest.fixture
def dev_operators(tmp_path: Path, local_cluster: Path, machine_registry: str) -> Iterator[dict[str, object]]:
    """The operators' side of dev (release_support.provide_as_operators); removed afterwards."""
    pv_name = f"{NAMESPACE}-ci-streams"
    remove_release(local_cluster, NAMESPACE)
    kubectl(local_cluster, "delete", "pv", pv_name, "--ignore-not-found")
    try:
        yield provide_as_operators(local_cluster, NAMESPACE, pv_name, _default_class(local_cluster), tmp_path,
                                   registry=machine_registry)
    finally:
        remove_release(local_cluster, NAMESPACE)
        kubectl(local_cluster, "delete", "pv", pv_name, "--ignore-not-found", "--wait=false")


def _ci_env(engine: RemoteEngine, kubeconfig: Path, tls: TlsRegistry) -> dict[str, str]:
    """What the team sets in GitLab, as ci-local reads it: the dind engine's variables, the kubeconfig secret,
    dev's registry CA and credentials."""
    return {**engine.env(), "DEV_KUBECONFIG": str(kubeconfig), **registry_env(tls)}


def _release_pods(kubeconfig: Path) -> list[dict[str, object]]:
    pods = json.loads(kubectl(kubeconfig, "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/instance=veza",
                              "-o", "json"))["items"]
    return [p for p in pods if p["status"].get("phase") == "Running"]


def test_branch_pipeline_releases_dev_through_the_remote_engine(
        tmp_path: Path, local_cluster: Path, machine_registry: str, remote_engine: RemoteEngine,
        tls_registry: TlsRegistry, node_trusts_dev: Path, dev_operators: dict[str, object]) -> None:
    clone = clone_repo(tmp_path)
    values = yaml.safe_load((clone / "helm/veza/values-dev.yaml").read_text())
    values["infra"] = dev_operators   # only the infra hosts: the lint job's unit tests hold dev's other values
    (clone / "helm/veza/values-dev.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    dev_registry_config(clone, tls_registry.address)
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "chore: dev's infra and registry, as its operators "
                    "run them"], check=True, timeout=60)
    # The operators' side of the node: the pipeline's own cluster-up writes its trust of dev's registry CA.
    up = invoke(clone, "cluster-up", "--env", "dev", extra_env=registry_env(tls_registry),
                drop_env=("VEZA_DEV_KUBECONFIG",), timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    assert node_trusts_dev.read_text() == tls_registry.ca_file.read_text(), flat(up.stdout)
    kc = _secret_kubeconfig(local_cluster, tmp_path / "dev-kubeconfig")
    t0 = time.monotonic()
    run = invoke(clone, "ci-local", "--pipeline", "branch", extra_env=_ci_env(remote_engine, kc, tls_registry),
                 drop_env=("KUBECONFIG",), timeout=3600)
    took = time.monotonic() - t0
    out = flat(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    passed = set(re.findall(r"PASS \[[^\]]+\] ([a-z-]+)", out))
    assert passed == {"lint", "build", "scan", "smoke", "push", "deploy-dev"}, (passed, out[-4000:])
    # Every job's bootstrap used the engine it was given, installing no Docker (issue 26, item 5).
    assert out.count("Debian's docker.io not needed") == 6 and "installing apt packages" not in out
    # The images were built by the remote engine: the manifest's image IDs are in it.
    manifest = json.loads((clone / ".pipeline/dev/manifest.json").read_text())
    ids = {rec["build"]["image_id"] for rec in manifest["services"].values()}
    assert ids, manifest
    for image_id in ids:
        assert remote_engine.docker("image", "inspect", image_id).returncode == 0, image_id
    assert tls_registry.password not in run.stdout + run.stderr
    status_matches(clone, "dev", extra_env={"VEZA_DEV_KUBECONFIG": str(kc), **registry_env(tls_registry)},
                   drop_env=("KUBECONFIG",))
    # The cluster pulled the release from the TLS registry, through the pull Secret: every release pod runs an
    # image of it by digest (one the machine's engine never held: the remote engine built it), and names the Secret.
    digests = {rec["push"]["digest"] for rec in manifest["services"].values()}
    pods = _release_pods(local_cluster)
    assert len(pods) >= len(manifest["services"]), [p["metadata"]["name"] for p in pods]
    for pod in pods:
        spec, statuses = pod["spec"], pod["status"]["containerStatuses"]   # type: ignore[index]
        assert {"name": PULL_SECRET} in spec["imagePullSecrets"], pod["metadata"]   # type: ignore[index]
        for st in statuses:
            assert st["image"].startswith(f"{tls_registry.address}/veza-dev/"), st
            assert st["imageID"].rsplit("@", 1)[-1] in digests, st
    secret = json.loads(kubectl(local_cluster, "-n", NAMESPACE, "get", "secret", PULL_SECRET, "-o", "json"))
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    print(f"ci-local branch pipeline: {took:.0f}s")


def test_tag_pipeline_without_signing_variables_stops_at_once_naming_them(tmp_path: Path) -> None:
    clone = clone_repo(tmp_path)
    tag = tag_release(clone)
    run = invoke(clone, "ci-local", "--pipeline", "tag",
                 drop_env=("VEZA_PROD_SIGNING_KEY", "VEZA_PROD_SIGNING_PASSPHRASE", "PROD_KUBECONFIG"),
                 extra_env={"VEZA_PROD_SIGNING_PASSPHRASE": ""}, timeout=120)
    out = flat(run.stdout + run.stderr)
    assert run.returncode == 2, out
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for name in ("VEZA_PROD_SIGNING_KEY", "VEZA_PROD_SIGNING_PASSPHRASE", "PROD_KUBECONFIG"):
        assert name in out, (name, out)
    assert tag.startswith("v") and not (clone / ".gitlab-ci-local").exists()   # no job ran
