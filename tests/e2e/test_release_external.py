"""The external cluster path, proved on the local cluster treated *as if it were external*.

A full `invoke release` to an environment whose pipeline.toml entry names `kube_context` and `kubeconfig_env`:
the only way the pipeline reaches the cluster is the kubeconfig file that variable points at (a copy of the local
cluster's, its context renamed; KUBECONFIG is unset). What a real cluster's operators provide is provided here by
the test acting as them, before the release: the namespace, the Secret, PostgreSQL/Redis/NATS (their hosts in
the environment's values file) and a PersistentVolume for the storage class the values name. The pipeline must
use none of its local shortcuts (local infra, hostPath volumes, a generated Secret, the default StorageClass).
Namespace veza-d2-ext; port-forwards on 127.0.0.1:19750-19799.
"""

from __future__ import annotations

import subprocess
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
)

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "veza-d2-ext"
CONTEXT = "veza-d2-external"
VARIABLE = "VEZA_D2_KUBECONFIG"
CLASS = "veza-d2-ext-static"
ENV_TABLE = f"""
[environments.ext]
registry = "127.0.0.1:5000"
registry_namespace = "veza-d2-ext"
kube_context = "{CONTEXT}"
kubeconfig_env = "{VARIABLE}"
namespace = "{NAMESPACE}"
helm_release = "veza"
values_file = "helm/veza/values-ext.yaml"
stages = ["build", "scan", "push", "sign", "verify-images", "deploy"]
auto_key = true
tags = ["sha"]
scan_threshold = "CRITICAL"
ignore_unfixed = true
"""




def _ext_clone(tmp_path: Path, local_cluster: Path, infra: dict[str, object]) -> tuple[Path, Path]:
    """A clone with the `ext` environment (pipeline.toml entry, values with these infra hosts), committed, and the
    external kubeconfig: the local cluster's, its context renamed (what a CI secret would hold)."""
    clone = clone_repo(tmp_path)
    values = yaml.safe_load((clone / "helm/veza/values-dev.yaml").read_text())
    values["infra"] = infra
    values["services"]["veza-stream-server"]["persistence"] = {"storageClassName": CLASS, "size": "1Gi"}
    (clone / "helm/veza/values-ext.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    (clone / "pipeline.toml").write_text((clone / "pipeline.toml").read_text() + ENV_TABLE)
    subprocess.run(["git", "-C", str(clone), "add", "-A"], check=True, timeout=60)
    subprocess.run(["git", "-C", str(clone), "commit", "-qm", "chore: the ext environment"], check=True, timeout=60)
    doc = yaml.safe_load(local_cluster.read_text())
    doc["contexts"][0]["name"] = CONTEXT
    doc["current-context"] = CONTEXT
    kc = tmp_path / "external-kubeconfig"
    kc.write_text(yaml.safe_dump(doc))
    kc.chmod(0o600)
    return clone, kc


@pytest.fixture
def external(tmp_path: Path, local_cluster: Path, machine_registry: str) -> Iterator[tuple[Path, Path]]:
    """(clone with the `ext` environment, the external kubeconfig); the operators' side set up beforehand, with
    their own (admin) access: namespace, Secret and infra, a volume of the class the values name."""
    remove_release(local_cluster, NAMESPACE)
    kubectl(local_cluster, "delete", "pv", f"{NAMESPACE}-streams", "--ignore-not-found")
    try:
        infra = provide_as_operators(local_cluster, NAMESPACE, f"{NAMESPACE}-streams", CLASS, tmp_path,
                                     registry=machine_registry)
        kubectl(local_cluster, "label", "namespace", NAMESPACE, "veza.pipeline.test=external")
        yield _ext_clone(tmp_path, local_cluster, infra)
    finally:
        remove_release(local_cluster, NAMESPACE)
        kubectl(local_cluster, "delete", "pv", f"{NAMESPACE}-streams", "--ignore-not-found", "--wait=false")


def test_release_through_an_external_kubeconfig_only(external: tuple[Path, Path], tmp_path: Path) -> None:
    clone, kc = external
    handed = {VARIABLE: str(kc), "HOME": str(tmp_path)}  # no ~/.kube/config to fall back on
    run = invoke(clone, "release", "--env", "ext", "--yes", extra_env=handed, drop_env=("KUBECONFIG",))
    out = flat(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    assert f"external cluster: context {CONTEXT} of {kc}" in out, out[-6000:]
    assert f"uses context '{CONTEXT}' of {kc} (from ${VARIABLE}); nothing to provision" in out, out[-6000:]
    for shortcut in ("local infra ready", "created PersistentVolume", "created Secret", "created the default "
                     "StorageClass", "cluster: ready in", "cluster: start: ready in", "cluster: not running",
                     "cluster: already running"):
        assert shortcut not in out, shortcut
    status_matches(clone, "ext", extra_env=handed, drop_env=("KUBECONFIG",))


def test_an_external_kubeconfig_without_the_context_is_refused_in_one_line(tmp_path: Path,
                                                                           local_cluster: Path) -> None:
    """Refused before any build or cluster call: nothing of the operators' side is needed."""
    clone, kc = _ext_clone(tmp_path, local_cluster, {"postgres": {"host": "10.0.0.1"}})
    other = yaml.safe_load(kc.read_text())
    other["contexts"][0]["name"] = "somebody-else"
    other["current-context"] = "somebody-else"
    wrong = tmp_path / "wrong-kubeconfig"
    wrong.write_text(yaml.safe_dump(other))
    run = invoke(clone, "release", "--env", "ext", "--yes", extra_env={VARIABLE: str(wrong)},
                 drop_env=("KUBECONFIG",))
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    out = flat(run.stdout + run.stderr)
    assert out.count(f"kube context '{CONTEXT}' not found") == 1 and f"(from ${VARIABLE})" in out, out[-3000:]
    assert "Traceback" not in out
