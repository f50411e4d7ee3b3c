"""Storage on the pipeline's own cluster: a default StorageClass, provisioned statically by the deploy.

The embedded Kubernetes 1.20 has no dynamic volume provisioner. It gets one StorageClass, `veza-local-hostpath`,
marked default (annotation storageclass.kubernetes.io/is-default-class, honoured by the DefaultStorageClass
admission plugin, on by default in 1.20), so a claim that names no class — what values-dev/staging/prod.yaml
write, as they would for a real cluster's default class — gets it. Its provisioner is
`kubernetes.io/no-provisioner`: the deploy provisions statically, one hostPath PersistentVolume per claim of the
release, pre-bound to it through claimRef (pipeline/stages/deploy/prepare.py, ensure_local_volumes), under
<cache>/volumes/<namespace>/<claim> with reclaim policy Retain. Single node only, by design.
Reference: https://kubernetes.io/docs/concepts/storage/storage-classes/ (default class, no-provisioner).
"""

from __future__ import annotations

from typing import Any

STORAGE_CLASS = "veza-local-hostpath"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
API_PATH = "/apis/storage.k8s.io/v1/storageclasses"


def storage_class_doc() -> dict[str, Any]:
    """The default StorageClass of the pipeline's own cluster (storage.k8s.io/v1)."""
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
                         "labels": {"app.kubernetes.io/managed-by": "veza-pipeline"}},
            "provisioner": "kubernetes.io/no-provisioner", "reclaimPolicy": "Retain",
            "volumeBindingMode": "Immediate"}
