"""What the release needs on the cluster before Helm runs: its namespace, its Secret, local volumes, local infra.

Each function is idempotent: it looks first and creates only what is missing.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from pipeline.core.config import Config
from pipeline.core.errors import UsageError
from pipeline.core.paths import CACHE_DIR
from pipeline.core.reporter import Reporter
from pipeline.core.yamlfile import load_text
from pipeline.local.infra import ensure_local_infra
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.stages.deploy.values import resource_name
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget

LOCAL_STORAGE_CLASS = "veza-local-hostpath"
# Pod Security Standards labels (https://kubernetes.io/docs/concepts/security/pod-security-admission/).
PSS_LABELS = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/warn": "restricted",
              "pod-security.kubernetes.io/audit": "restricted"}


def ensure_namespace(rt: ReleaseTarget, reporter: Reporter) -> None:
    """Create the release's namespace (labelled part-of veza, Pod Security `restricted`) when it is missing."""
    ns = kubectl.get_json(rt.kube, "namespace", rt.namespace, namespaced=False, ignore_not_found=True)
    if ns:
        return
    doc = {"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": rt.namespace, "labels": {"app.kubernetes.io/part-of": "veza", **PSS_LABELS}}}
    kubectl.apply(rt.kube, json.dumps(doc))
    reporter.info(f"  created namespace {rt.namespace} (Pod Security: restricted)")


def ensure_local_infra_values(cfg: Config, rt: ReleaseTarget, chart: Path, out_dir: Path,
                              reporter: Reporter) -> Path:
    """Run PostgreSQL/Redis/NATS beside the release (an environment with `local_infra = true`: the pipeline's
    own cluster has none) and return the values file that points the chart at them (hosts by ClusterIP)."""
    ensure_namespace(rt, reporter)
    secret = (load_text((chart / "values.yaml").read_text(), "values.yaml") or {})["secrets"]["name"]
    return ensure_local_infra(cfg, rt.kube, secret, out_dir, say=reporter.info)


def ensure_secret(rt: ReleaseTarget, merged: dict[str, Any], reporter: Reporter) -> None:
    """The chart only references the Secret (`secrets.name`). An environment with `generate_secrets = true`
    (pipeline.toml) gets the missing keys with random values; any other must have them already: their values
    are nobody's business here. Raises UsageError naming the missing keys and the command that adds them."""
    name = merged["secrets"]["name"]
    keys = sorted({merged["secrets"]["keys"][k] for s in merged["services"].values()
                   if s.get("enabled") for k in (s.get("secretEnv") or {}).values()})
    found = kubectl.get_json(rt.kube, "secret", name, ignore_not_found=True)
    have = set((found.get("data") or {}).keys()) if found else set()
    missing = [k for k in keys if k not in have]
    if not missing:
        return
    if rt.env.generate_secrets:
        data = {k: secrets.token_urlsafe(24) for k in missing}
        doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                               "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "veza"}},
                               "stringData": data}
        if found and found.get("data"):
            doc["data"] = found["data"]
        kubectl.apply(rt.kube, json.dumps(doc))
        reporter.info(f"  created Secret {name} with random {', '.join(missing)} "
                      f"(generate_secrets = true for {rt.env.name})")
        return
    literal = " ".join(f"--from-literal={k}=..." for k in missing)
    raise UsageError(f"Secret {name} in namespace {rt.namespace} lacks {', '.join(missing)}",
                     f"create it: kubectl -n {rt.namespace} create secret generic {name} {literal}")


def ensure_local_volumes(rt: ReleaseTarget, merged: dict[str, Any], reporter: Reporter) -> None:
    """The local cluster has no volume provisioner: a hostPath PersistentVolume (reclaim policy Retain) per
    claim of the local storage class, pre-bound to that claim (claimRef), owned by the pods' UID/fsGroup.
    Host directories live under <cache>/volumes/<namespace>/<claim>."""
    for name, svc in merged["services"].items():
        p = svc.get("persistence") or {}
        if not (svc.get("enabled") and p.get("enabled") and p.get("storageClassName") == LOCAL_STORAGE_CLASS):
            continue
        claim = p.get("existingClaim") or resource_name(rt.release, name)
        pv_name = f"veza-{rt.namespace}-{claim}"[:63].rstrip("-")
        if kubectl.get_json(rt.kube, "pv", pv_name, namespaced=False, ignore_not_found=True):
            continue
        host_dir = CACHE_DIR / "volumes" / rt.namespace / claim
        host_dir.mkdir(parents=True, exist_ok=True)
        uid = int(merged["securityContext"]["runAsUser"])
        os.chown(host_dir, uid, int(merged["securityContext"]["fsGroup"]))
        doc = {"apiVersion": "v1", "kind": "PersistentVolume",
               "metadata": {"name": pv_name, "labels": {"app.kubernetes.io/part-of": "veza",
                                                        "veza.io/namespace": rt.namespace}},
               "spec": {"capacity": {"storage": p.get("size", "1Gi")},
                        "accessModes": p.get("accessModes", ["ReadWriteOnce"]),
                        "persistentVolumeReclaimPolicy": "Retain", "storageClassName": LOCAL_STORAGE_CLASS,
                        "claimRef": {"namespace": rt.namespace, "name": claim},
                        "hostPath": {"path": str(host_dir), "type": "Directory"}}}
        cluster_scope = KubeTarget(rt.kube.kubeconfig, rt.kube.context, "")
        kubectl.apply(cluster_scope, json.dumps(doc))
        reporter.info(f"  created PersistentVolume {pv_name} (hostPath {host_dir}) for claim {claim}")
