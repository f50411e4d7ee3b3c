"""What the release needs on the cluster before Helm runs: its namespace, its Secret, local volumes, local infra.

Each function is idempotent: it looks first and creates only what is missing.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.errors import UsageError
from pipeline.core.paths import CACHE_DIR
from pipeline.core.redact import register_secret
from pipeline.core.reporter import Reporter
from pipeline.core.yamlfile import load_text
from pipeline.gate import pod_security
from pipeline.local.cluster.storage import STORAGE_CLASS, storage_class_doc
from pipeline.local.infra import (
    ensure_local_infra,
    ensure_secret,
    infra_documents,
    missing_secret_keys,
    placeholder_images,
)
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.stages.deploy.values import resource_name
from pipeline.tools import helm, kubectl
from pipeline.tools.kubectl import KubeTarget
from pipeline.tools.registry_api import Credentials

LOCAL_STORAGE_CLASS = STORAGE_CLASS
# Pod Security Standards labels (https://kubernetes.io/docs/concepts/security/pod-security-admission/): enforced
# by Pod Security admission from Kubernetes 1.23 on; inert on 1.20, where the pipeline's gate
# (pipeline/gate/pod_security.py) checks the rendered manifests instead.
PSS_LABELS = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/warn": "restricted",
              "pod-security.kubernetes.io/audit": "restricted"}


def pod_security_gate(chart: Path, rt: ReleaseTarget, values_files: list[Path], reporter: Reporter,
                      cfg: Config | None = None) -> None:
    """Render the chart with the environment's values files (and the chart's placeholder digests: an image
    does not change a pod's security) and raise PolicyBlocked (exit 3) on the first breach of the Pod Security
    "restricted" profile (pipeline/gate/pod_security.py), before anything reaches the cluster. With `cfg`, on
    the pipeline's own cluster of an environment with local_infra, the infra documents the deploy applies
    (pipeline/local/infra.py, with placeholder digests) are checked the same way."""
    files = [*values_files, chart / "ci" / "digests-values.yaml"]
    text = helm.template(chart, rt.release, files, namespace=rt.namespace)
    checked = pod_security.enforce_restricted(text, where=f"{rt.env.name}'s rendered chart")
    infra = ""
    if cfg is not None and rt.env.local_infra and not rt.external:
        docs = infra_documents(cfg, _secret_name(chart), placeholder_images(cfg, rt.env),
                               namespace=rt.namespace)
        n = pod_security.enforce_restricted(docs, where=f"{rt.env.name}'s local infra documents")
        checked, infra = checked + n, f" ({n} of the local infra)"
    reporter.info(f"  Pod Security gate (restricted, checked by the pipeline): {checked} pod template(s) pass{infra}")


def _secret_name(chart: Path) -> str:
    """The Secret the chart references (`secrets.name` of its values.yaml)."""
    return str((load_text((chart / "values.yaml").read_text(), "values.yaml") or {})["secrets"]["name"])


def ensure_namespace(rt: ReleaseTarget, reporter: Reporter) -> None:
    """Create the release's namespace (labelled part-of veza, Pod Security `restricted`) when it is missing.
    The labels only take effect where Pod Security admission exists (Kubernetes >= 1.23)."""
    ns = kubectl.get_json(rt.kube, "namespace", rt.namespace, namespaced=False, ignore_not_found=True)
    if ns:
        return
    doc = {"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": rt.namespace, "labels": {"app.kubernetes.io/part-of": "veza", **PSS_LABELS}}}
    kubectl.apply(rt.kube, json.dumps(doc))
    reporter.info(f"  created namespace {rt.namespace} (labelled pod-security.kubernetes.io/enforce=restricted: "
                  "enforced only by Kubernetes >= 1.23's Pod Security admission)")


def pull_credentials(env: Environment) -> Credentials | None:
    """The cluster's pull credentials of `env` (its pull_username_env/pull_password_env), None when the
    environment has no pull Secret. UsageError (exit 2) naming the environment, the registry and each unset
    variable: checked before anything reaches the cluster."""
    if not env.pull_secret:
        return None
    unset = [v for v in (env.pull_username_env, env.pull_password_env) if not os.environ.get(v)]
    if unset:
        raise UsageError(f"environment {env.name}: registry {env.registry}: the cluster's pull credentials "
                         f"are missing: {' and '.join(unset)} not set",
                         f"export {env.pull_username_env} and {env.pull_password_env} (a user that may pull), "
                         f"or remove pull_secret from [environments.{env.name}]")
    return Credentials(os.environ[env.pull_username_env], os.environ[env.pull_password_env])


def pull_secret_doc(name: str, registry: str, creds: Credentials) -> dict[str, Any]:
    """The `kubernetes.io/dockerconfigjson` Secret `name` that lets the kubelet pull from `registry`
    (https://kubernetes.io/docs/concepts/configuration/secret/#docker-config-secrets). Its encoded content is
    registered for redaction: it must never reach a log."""
    config = {"auths": {registry: {"username": creds.username, "password": creds.password, "auth": creds.basic()}}}
    encoded = base64.b64encode(json.dumps(config, sort_keys=True).encode()).decode()
    register_secret(encoded)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "veza",
                                                  "app.kubernetes.io/managed-by": "veza-pipeline"}},
            "data": {".dockerconfigjson": encoded}}


def ensure_pull_secret(rt: ReleaseTarget, reporter: Reporter) -> None:
    """Create or update the environment's pull Secret in the release's namespace from its two variables
    (pull_credentials), given to kubectl on stdin: never in argv, a values file or a log. Nothing for an
    environment without pull_secret."""
    creds = pull_credentials(rt.env)
    if creds is None:
        return
    kubectl.apply(rt.kube, json.dumps(pull_secret_doc(rt.env.pull_secret, rt.env.registry, creds)))
    reporter.info(f"  pull Secret {rt.env.pull_secret} for {rt.env.registry} applied from "
                  f"{rt.env.pull_username_env}/{rt.env.pull_password_env} (referenced as imagePullSecrets)")


def ensure_local_infra_values(cfg: Config, rt: ReleaseTarget, chart: Path, out_dir: Path,
                              reporter: Reporter, images: Mapping[str, str]) -> Path:
    """Run the infra images beside the release (an environment with `local_infra = true`: the pipeline's own
    cluster has none), each on `images[name]` (repository@sha256:…, core/release_images.py pinned_infra), and
    return the values file that points the chart at them (hosts by ClusterIP)."""
    ensure_namespace(rt, reporter)
    return ensure_local_infra(cfg, rt.kube, _secret_name(chart), out_dir, images, say=reporter.info)


def ensure_chart_secret(rt: ReleaseTarget, merged: dict[str, Any], reporter: Reporter) -> None:
    """The chart only references the Secret (`secrets.name`). An environment with `generate_secrets = true`
    (pipeline.toml) gets the missing keys with random values; any other must have them already: their values
    are nobody's business here. Raises UsageError naming the missing keys and the command that adds them."""
    name = merged["secrets"]["name"]
    keys = sorted({merged["secrets"]["keys"][k] for s in merged["services"].values()
                   if s.get("enabled") for k in (s.get("secretEnv") or {}).values()})
    if rt.env.generate_secrets:
        added = ensure_secret(rt.kube, name, keys)
        if added:
            reporter.info(f"  created Secret {name} with random {', '.join(added)} "
                          f"(generate_secrets = true for {rt.env.name})")
        return
    missing = missing_secret_keys(rt.kube, name, keys)
    if not missing:
        return
    literal = " ".join(f"--from-literal={k}=..." for k in missing)
    raise UsageError(f"Secret {name} in namespace {rt.namespace} lacks {', '.join(missing)}",
                     f"create it: kubectl -n {rt.namespace} create secret generic {name} {literal}")


def ensure_local_storage_class(rt: ReleaseTarget, reporter: Reporter) -> None:
    """The pipeline's own cluster's default StorageClass (pipeline/local/cluster/storage.py), created when
    missing (cluster-up creates it; a cluster started by an older version may lack it)."""
    cluster_scope = KubeTarget(rt.kube.kubeconfig, rt.kube.context, "")
    if kubectl.get_json(cluster_scope, "storageclass", STORAGE_CLASS, namespaced=False, ignore_not_found=True):
        return
    kubectl.apply(cluster_scope, json.dumps(storage_class_doc()))
    reporter.info(f"  created the default StorageClass {STORAGE_CLASS} (static hostPath provisioning by the deploy)")


def local_claims(release: str, merged: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(claim name, persistence values) of every enabled claim the pipeline's own cluster provisions: those
    naming its class, or none (the cluster default, which is its class there)."""
    out = []
    for name, svc in merged["services"].items():
        p = svc.get("persistence") or {}
        if svc.get("enabled") and p.get("enabled") and p.get("storageClassName", "") in ("", LOCAL_STORAGE_CLASS):
            out.append((str(p.get("existingClaim") or resource_name(release, name)), p))
    return out


def _rebind_released(rt: ReleaseTarget, pv: dict[str, Any], claim: str, reporter: Reporter) -> None:
    """A volume Released by an earlier claim of the same name (the release was uninstalled, or its namespace
    deleted) binds no new claim until its stale claimRef is cleared; clearing it keeps the data (Retain) and
    lets the reinstalled release find it again."""
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    if (pv.get("status") or {}).get("phase") != "Released" or (ref.get("namespace"), ref.get("name")) != (
            rt.namespace, claim):
        return
    name = pv["metadata"]["name"]
    kubectl.patch(rt.kube, "pv", name, namespaced=False,
                  merge_patch={"spec": {"claimRef": {"namespace": rt.namespace, "name": claim, "uid": None,
                                                     "resourceVersion": None}}})
    reporter.info(f"  PersistentVolume {name} was released by an earlier {claim}: bound again, data kept")


def ensure_local_volumes(rt: ReleaseTarget, merged: dict[str, Any], reporter: Reporter) -> None:
    """Static provisioning on the pipeline's own cluster (never on an external one): a hostPath
    PersistentVolume (reclaim policy Retain) per claim of the release (local_claims), pre-bound to it
    (claimRef), of the claim's class (its live class when it exists already, else the default class),
    owned by the pods' UID/fsGroup. Host directories live under <cache>/volumes/<namespace>/<claim>."""
    claims = local_claims(rt.release, merged)
    if not claims:
        return
    ensure_local_storage_class(rt, reporter)
    cluster_scope = KubeTarget(rt.kube.kubeconfig, rt.kube.context, "")
    for claim, p in claims:
        pv_name = f"veza-{rt.namespace}-{claim}"[:63].rstrip("-")
        existing = kubectl.get_json(rt.kube, "pv", pv_name, namespaced=False, ignore_not_found=True)
        if existing:
            _rebind_released(rt, existing, claim, reporter)
            continue
        live = kubectl.get_json(rt.kube, "pvc", claim, ignore_not_found=True)
        klass = (live.get("spec") or {}).get("storageClassName") or "" if live else (
            p.get("storageClassName") or LOCAL_STORAGE_CLASS)
        host_dir = CACHE_DIR / "volumes" / rt.namespace / claim
        host_dir.mkdir(parents=True, exist_ok=True)
        uid = int(merged["securityContext"]["runAsUser"])
        os.chown(host_dir, uid, int(merged["securityContext"]["fsGroup"]))
        doc = {"apiVersion": "v1", "kind": "PersistentVolume",
               "metadata": {"name": pv_name, "labels": {"app.kubernetes.io/part-of": "veza",
                                                        "veza.io/namespace": rt.namespace}},
               "spec": {"capacity": {"storage": p.get("size", "1Gi")},
                        "accessModes": p.get("accessModes", ["ReadWriteOnce"]),
                        "persistentVolumeReclaimPolicy": "Retain", "storageClassName": klass,
                        "claimRef": {"namespace": rt.namespace, "name": claim},
                        "hostPath": {"path": str(host_dir), "type": "Directory"}}}
        kubectl.apply(cluster_scope, json.dumps(doc))
        reporter.info(f"  created PersistentVolume {pv_name} (hostPath {host_dir}, class {klass or 'none'}) "
                      f"for claim {claim}")
