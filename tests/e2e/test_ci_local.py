"""`invoke ci-local`: the GitLab template run job by job (gitlab-ci-local, shell executor, each job in its own copy,
sharing only artifacts), against an engine that is not the machine's: the second dockerd over TCP+TLS
(tests/integration/remote_engine.py), and the machine's registry. The cluster is reached only through the
kubeconfig the CI variable holds (the local cluster's, its context renamed, as a secret store would hold it);
what its operators provide (namespace, Secret, PostgreSQL/Redis/NATS, a volume) is set up by the test as them.

- branch pipeline: lint → build → scan, smoke → push → deploy-dev; then `invoke status --env dev` exit 0, every
  service on its manifest digest.
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

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "veza-dev"
CONTEXT = "veza-ci-dev"




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


def _ci_env(engine: RemoteEngine, kubeconfig: Path) -> dict[str, str]:
    """What the team sets in GitLab, as ci-local reads it: the dind engine's variables, the kubeconfig secret."""
    return {**engine.env(), "DEV_KUBECONFIG": str(kubeconfig)}


def test_branch_pipeline_releases_dev_through_the_remote_engine(
        tmp_path: Path, local_cluster: Path, machine_registry: str, remote_engine: RemoteEngine,
        dev_operators: dict[str, object]) -> None:
    clone = clone_repo(tmp_path)
    values = yaml.safe_load((clone / "helm/veza/values-dev.yaml").read_text())
    values["infra"] = dev_operators   # only the infra hosts: the lint job's unit tests hold dev's other values
    (clone / "helm/veza/values-dev.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "chore: dev's infra, as its operators run it"],
                   check=True, timeout=60)
    kc = _secret_kubeconfig(local_cluster, tmp_path / "dev-kubeconfig")
    t0 = time.monotonic()
    run = invoke(clone, "ci-local", "--pipeline", "branch", extra_env=_ci_env(remote_engine, kc),
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
    status_matches(clone, "dev", extra_env={"VEZA_DEV_KUBECONFIG": str(kc)}, drop_env=("KUBECONFIG",))
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
