"""What runs: the release's revision and, per service, the image its Deployment runs and whether it is Ready."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.errors import PipelineError
from pipeline.core.manifest import Manifest
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.stages.deploy.values import serving_deployment
from pipeline.tools import helm, kubectl

OBSERVE_TIMEOUT_S = 10


def deployment_ready(d: dict[str, Any]) -> bool:
    """A Deployment (as `kubectl get -o json` gives it) whose controller saw its last change and whose every
    desired replica is updated and Ready (what `kubectl rollout status` waits for)."""
    spec, st = d["spec"], d.get("status", {})
    want = int(spec.get("replicas", 1))
    return (int(st.get("updatedReplicas", 0)) == want and int(st.get("readyReplicas", 0)) == want
            and int(st.get("observedGeneration", 0)) >= int(d["metadata"].get("generation", 0)))


def release_deployments(rt: ReleaseTarget) -> dict[str, dict[str, Any]]:
    """The release's Deployments (its selector) by name, as `kubectl get -o json` gives them."""
    items = kubectl.get_json(rt.kube, "deployments", selector=rt.selector).get("items", [])
    return {d["metadata"]["name"]: d for d in items}


def live_images(rt: ReleaseTarget) -> dict[str, tuple[str, bool]]:
    """Deployment name → (its first container's image, deployment_ready) for the release's Deployments."""
    return {name: (d["spec"]["template"]["spec"]["containers"][0]["image"], deployment_ready(d))
            for name, d in release_deployments(rt).items()}


@dataclass(frozen=True)
class Observation:
    """What the cluster says now: whether its API answers, the Helm release (None = not installed), and the
    release's Deployments by name (as `kubectl get -o json` gives them)."""

    cluster: bool
    release: helm.ReleaseStatus | None
    deployments: dict[str, dict[str, Any]]


def observe(rt: ReleaseTarget, *, timeout_s: float = OBSERVE_TIMEOUT_S) -> Observation:
    """Two calls in parallel (wall time about one of them): the release's Deployments, which also proves the API
    answers, and `helm status`. Raises StageFailed when the API answers but refuses."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        deps = pool.submit(kubectl.list_json, rt.kube, "deployments", selector=rt.selector, timeout=timeout_s)
        rel = pool.submit(helm.status, rt.kube, rt.release, timeout=timeout_s + 5)
        data = deps.result()
        if data is None:
            return Observation(False, None, {})
        status = rel.result()
    return Observation(True, status, {d["metadata"]["name"]: d for d in data.get("items", [])})


def summarize(cfg: Config, env: Environment, manifest: Manifest | None, seen: Observation,
              cluster_version: str | None = None) -> dict[str, Any]:
    """The status of a release as data, from an observation.

    Shape: {env, release, namespace, cluster: version | "answers" | None, revision, status, last_deployed,
    services: {name: {deployed, image, digest, replicas, ready, manifest_digest, matches_manifest}}}."""
    out: dict[str, Any] = {"env": env.name, "release": env.helm_release, "namespace": env.namespace,
                           "cluster": (cluster_version or "answers") if seen.cluster else None,
                           "revision": None, "status": None, "services": {}}
    if not seen.cluster:
        return out
    st = seen.release
    if st is None:
        out["status"] = "not-installed"
        return out
    out.update(revision=st.revision, status=st.status, last_deployed=st.last_deployed)
    recorded = manifest if manifest is not None and manifest.env == env.name else None
    for svc in cfg.services:
        d = seen.deployments.get(serving_deployment(env.helm_release, svc.name, seen.deployments))
        entry: dict[str, Any] = {"deployed": d is not None}
        if d is not None:
            image = d["spec"]["template"]["spec"]["containers"][0]["image"]
            st_ = d.get("status", {})
            entry.update(image=image, digest=image.split("@", 1)[1] if "@" in image else None,
                         replicas=int(d["spec"].get("replicas", 1)), ready=int(st_.get("readyReplicas", 0)))
        pushed = recorded.pushed(svc.name) if recorded is not None else None
        mdigest = pushed.digest if pushed is not None else None
        entry["manifest_digest"] = mdigest
        entry["matches_manifest"] = bool(d is not None and mdigest and entry.get("digest") == mdigest)
        out["services"][svc.name] = entry
    return out


def release_status(cfg: Config, env: Environment, manifest: Manifest | None, *,
                   kubeconfig: Path | None = None) -> dict[str, Any]:
    """Revision, digests running, readiness per service, and whether they match the Release manifest
    (summarize()'s shape, with the API server's version)."""
    rt = ReleaseTarget.of(env, kubeconfig)
    seen = observe(rt)
    return summarize(cfg, env, manifest, seen, kubectl.server_version(rt.kube) if seen.cluster else None)


def rollout_status(rt: ReleaseTarget) -> dict[str, str | None]:
    """The release's last progressive rollout as one line for `invoke status`, from its state in the cluster (one
    read of progressive.py's ConfigMap): {"canary": phase, step, weight achieved, intervals judged (canary.py),
    "blue_green": phase, which colour serves and which previews, intervals judged (bluegreen.py)}, the other one
    None (both None: it never ran one). A state that cannot be read is said as such."""
    from pipeline.stages.deploy import bluegreen, canary, progressive

    out: dict[str, str | None] = {"canary": None, "blue_green": None}
    try:
        doc = progressive.read_doc(rt)
    except PipelineError as exc:
        return {**out, "canary": f"rollout: {exc.message}"}
    if doc is None:
        return out
    if doc.get("strategy") == bluegreen.STRATEGY:
        try:
            return {**out, "blue_green": bluegreen.BlueGreenState.from_dict(doc).status_line()}
        except ValueError as exc:
            return {**out, "blue_green": f"blue-green: {progressive.unreadable(rt, str(exc)).message}"}
    try:
        return {**out, "canary": canary.CanaryState.from_dict(doc).status_line()}
    except ValueError as exc:
        return {**out, "canary": f"canary: {progressive.unreadable(rt, str(exc)).message}"}
