"""What runs: the release's revision and, per service, the image its Deployment runs and whether it is Ready."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.manifest import Manifest
from pipeline.stages.deploy.target import ReleaseTarget, kube_target
from pipeline.stages.deploy.values import resource_name
from pipeline.tools import helm, kubectl


def deployment_ready(d: dict[str, Any]) -> bool:
    """A Deployment (as `kubectl get -o json` gives it) whose controller saw its last change and whose every
    desired replica is updated and Ready (what `kubectl rollout status` waits for)."""
    spec, st = d["spec"], d.get("status", {})
    want = int(spec.get("replicas", 1))
    return (int(st.get("updatedReplicas", 0)) == want and int(st.get("readyReplicas", 0)) == want
            and int(st.get("observedGeneration", 0)) >= int(d["metadata"].get("generation", 0)))


def live_images(rt: ReleaseTarget) -> dict[str, tuple[str, bool]]:
    """Deployment name → (its first container's image, deployment_ready) for the release's Deployments."""
    data = kubectl.get_json(rt.kube, "deployments", selector=rt.selector)
    return {d["metadata"]["name"]: (d["spec"]["template"]["spec"]["containers"][0]["image"], deployment_ready(d))
            for d in data.get("items", [])}


def release_status(cfg: Config, env: Environment, manifest: Manifest | None, *,
                   kubeconfig: Path | None = None) -> dict[str, Any]:
    """Revision, digests running, readiness per service, and whether they match the Release manifest.

    Shape: {env, release, namespace, cluster: version | None, revision, status, last_deployed,
    services: {name: {deployed, image, digest, replicas, ready, manifest_digest, matches_manifest}}}."""
    target = kube_target(env, kubeconfig)
    out: dict[str, Any] = {"env": env.name, "release": env.helm_release, "namespace": env.namespace,
                           "cluster": None, "revision": None, "status": None, "services": {}}
    version = kubectl.server_version(target)
    out["cluster"] = version
    if not version:
        return out
    st = helm.status(target, env.helm_release)
    if st is None:
        out["status"] = "not-installed"
        return out
    out.update(revision=st.revision, status=st.status, last_deployed=st.last_deployed)
    data = kubectl.get_json(target, "deployments", selector=f"app.kubernetes.io/instance={env.helm_release}")
    deployments = {d["metadata"]["name"]: d for d in data.get("items", [])}
    msvcs = manifest.data["services"] if manifest is not None and manifest.env == env.name else {}
    for svc in cfg.services:
        full = resource_name(env.helm_release, svc.name)
        d = deployments.get(full)
        entry: dict[str, Any] = {"deployed": d is not None}
        if d is not None:
            image = d["spec"]["template"]["spec"]["containers"][0]["image"]
            st_ = d.get("status", {})
            entry.update(image=image, digest=image.split("@", 1)[1] if "@" in image else None,
                         replicas=int(d["spec"].get("replicas", 1)), ready=int(st_.get("readyReplicas", 0)))
        m = msvcs.get(svc.name) or {}
        mdigest = (m.get("push") or {}).get("digest")
        entry["manifest_digest"] = mdigest
        entry["matches_manifest"] = bool(d is not None and mdigest and entry.get("digest") == mdigest)
        out["services"][svc.name] = entry
    return out
