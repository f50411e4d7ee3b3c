"""Storage on the pipeline's own cluster: which claims the deploy provisions, and the default StorageClass."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.local.cluster.storage import DEFAULT_CLASS_ANNOTATION, STORAGE_CLASS, storage_class_doc
from pipeline.stages.deploy.prepare import local_claims
from pipeline.stages.deploy.values import deep_merge

ROOT = Path(__file__).resolve().parents[2]


def _merged(env: str) -> dict[str, object]:
    base = yaml.safe_load((ROOT / "helm/veza/values.yaml").read_text())
    return deep_merge(base, yaml.safe_load((ROOT / f"helm/veza/values-{env}.yaml").read_text()))


def test_every_environment_has_one_claim_the_own_cluster_provisions() -> None:
    for env in ("local", "dev", "staging", "prod"):
        claims = local_claims("veza", _merged(env))  # type: ignore[arg-type]
        assert [c for c, _ in claims] == ["veza-stream-server"], env


def test_claims_of_another_class_or_disabled_are_left_alone() -> None:
    merged = _merged("prod")
    merged["services"]["veza-stream-server"]["persistence"]["storageClassName"] = "fast-ssd"  # type: ignore[index]
    assert local_claims("veza", merged) == []  # type: ignore[arg-type]
    merged = _merged("dev")
    merged["services"]["veza-stream-server"]["enabled"] = False  # type: ignore[index]
    assert local_claims("veza", merged) == []  # type: ignore[arg-type]
    merged = _merged("dev")
    merged["services"]["veza-stream-server"]["persistence"]["existingClaim"] = "streams"  # type: ignore[index]
    assert [c for c, _ in local_claims("veza", merged)] == ["streams"]  # type: ignore[arg-type]


def test_the_storage_class_is_the_default_without_a_dynamic_provisioner() -> None:
    doc = storage_class_doc()
    assert doc["metadata"]["name"] == STORAGE_CLASS
    assert doc["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION] == "true"
    assert (doc["provisioner"], doc["volumeBindingMode"], doc["reclaimPolicy"]) == (
        "kubernetes.io/no-provisioner", "Immediate", "Retain")


def test_the_embedded_overlay_only_scales_cpu_requests() -> None:
    overlay = yaml.safe_load((ROOT / "helm/veza/values-embedded.yaml").read_text())
    for name, svc in overlay["services"].items():
        assert list(svc) == ["resources"] and list(svc["resources"]) == ["requests"], name
        assert list(svc["resources"]["requests"]) == ["cpu"], name
    prod = deep_merge(_merged("prod"), overlay)
    api = prod["services"]["veza-backend-api"]  # type: ignore[index]
    assert api["replicas"] == 3 and api["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}
    assert api["resources"]["requests"] == {"cpu": "10m", "memory": "128Mi"}
