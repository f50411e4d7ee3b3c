"""The infra images beside the release (PostgreSQL, Redis, NATS…: [infra.NAME]), for environments on the
pipeline's own local cluster.

In production the infra is external to the chart (hosts from values). The local cluster has none, and no DNS
add-on either, so for environments with `local_infra = true` the deploy runs each [infra.NAME] image as a
Deployment + Service in the namespace, and hands the chart their ClusterIPs as hosts (kube-proxy routes them)
through a generated values file. Every image is pinned: the documents take `repository@sha256:…` references
(the Release manifest's push records: pipeline/core/release_images.py), the same images the push, sign and
verify-images stages handled, and refuse anything else. Passwords come from the same Secret the chart
references, created here with random values when absent.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config import Config, Environment
from pipeline.core.errors import DeployFailed, UsageError
from pipeline.core.manifest import atomic_write
from pipeline.core.release_images import check_pinned, dependency_infra, infra_names
from pipeline.local import infra_prometheus
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget

SECRET_KEYS = ("jwt-secret", "db-password", "redis-password")
LABEL = "veza.pipeline/infra"
# What the Pod Security gate renders the documents with before any digest exists (an image does not change a
# pod's security; the chart's gate uses helm/veza/ci/digests-values.yaml the same way).
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


REDIS_STDIN_CONFIG = ("exec redis-server - --bind 0.0.0.0 --dir /data --appendonly yes <<EOF\n"
                      'requirepass "$REDIS_PASSWORD"\nEOF')


def _container(name: str, image: str, port: int, secret: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = []
    args: list[str] = []
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if name == "postgres":
        env = [{"name": "POSTGRES_USER", "value": "veza"}, {"name": "POSTGRES_DB", "value": "veza"},
               {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
               {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "db-password"}}}]
        mounts += [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                   {"name": "run", "mountPath": "/var/run/postgresql"}]
    elif name == "redis":
        env = [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "redis-password"}}}]
        # The password reaches redis-server as configuration on stdin (a here-document filled in by the shell
        # from the environment), never on a command line; "$(REDIS_PASSWORD)" would be expanded by the kubelet
        # into the argv.
        args = ["sh", "-c", REDIS_STDIN_CONFIG]
        mounts.append({"name": "data", "mountPath": "/data"})
    container: dict[str, Any] = {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent", "env": env,
        "ports": [{"containerPort": port, "protocol": "TCP"}], "volumeMounts": mounts,
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    }
    if args:
        container["args"] = args
    return container


def placeholder_images(cfg: Config, env: Environment) -> dict[str, str]:
    """The [infra.NAME] `env` runs → a pinned placeholder reference, for the Pod Security gate's rendering."""
    return {name: f"example.invalid/infra/{name}@{PLACEHOLDER_DIGEST}" for name in infra_names(cfg, env)}


def infra_documents(cfg: Config, secret: str, images: Mapping[str, str], *, namespace: str) -> list[dict[str, Any]]:
    """A Deployment and a Service per [infra.NAME] named in `images` (the release's, in `namespace`), each
    running `images[name]`, a `repository@sha256:…` reference (imagePullPolicy IfNotPresent: a digest cannot
    change under it); for [infra.prometheus] also its ConfigMap, ServiceAccount and namespaced RBAC
    (local/infra_prometheus.py). UsageError naming the first dependency (dependency_infra: the chart needs
    them all) or named component whose image is missing or not pinned by digest (check_pinned), or a name
    that is no [infra.NAME]."""
    check_pinned(images, [*dependency_infra(cfg), *images])
    unknown = [n for n in images if n not in cfg.infra]
    if unknown:
        raise UsageError(f"infra image {unknown[0]} has no [infra.{unknown[0]}] in pipeline.toml",
                         "deploy the infra from the Release manifest of this configuration")
    docs: list[dict[str, Any]] = []
    for name, infra in cfg.infra.items():
        if name not in images:
            continue
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "veza", LABEL: "true"}
        volumes: list[dict[str, Any]] = [{"name": v, "emptyDir": {}} for v in ("tmp", "data", "run")]
        container = _container(name, images[name], infra.port, secret)
        pod_meta: dict[str, Any] = {"labels": labels}
        pod_spec: dict[str, Any] = {"securityContext": {"fsGroup": 999, "runAsNonRoot": True,
                                                        "seccompProfile": {"type": "RuntimeDefault"}},
                                    "containers": [container], "volumes": volumes,
                                    "terminationGracePeriodSeconds": 5}
        if name == infra_prometheus.NAME:
            config = infra_prometheus.scrape_config(cfg.root)
            docs += infra_prometheus.extra_documents(namespace, labels, config)
            infra_prometheus.shape_pod(pod_spec, pod_meta, container, infra.port, config)
        docs += [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
             "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                      "template": {"metadata": pod_meta, "spec": pod_spec}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
             "spec": {"selector": labels, "ports": [{"port": infra.port, "targetPort": infra.port,
                                                     "protocol": "TCP"}]}},
        ]
    return docs


def missing_secret_keys(target: KubeTarget, name: str, keys: Sequence[str]) -> list[str]:
    """Those of `keys` that Secret `name` in target's namespace lacks (all of them when it does not exist)."""
    return _missing(kubectl.get_json(target, "secret", name, ignore_not_found=True), keys)


def ensure_secret(target: KubeTarget, name: str, keys: Sequence[str] = SECRET_KEYS) -> list[str]:
    """Give Secret `name` a random value (24 url-safe bytes) for each of `keys` it lacks, keeping the values it
    has (created when missing). Returns the keys added ([]: nothing applied). Values reach kubectl on stdin."""
    found = kubectl.get_json(target, "secret", name, ignore_not_found=True)
    missing = _missing(found, keys)
    if not missing:
        return []
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "veza"}},
                           "stringData": {k: secrets.token_urlsafe(24) for k in missing}}
    if found and found.get("data"):
        doc["data"] = found["data"]
    kubectl.apply(target, json.dumps(doc))  # on stdin: never in argv
    return missing


def _missing(found: dict[str, Any] | None, keys: Sequence[str]) -> list[str]:
    have = set((found.get("data") or {}).keys()) if found else set()
    return [k for k in keys if k not in have]


def chart_hosts(cfg: Config, cluster_ips: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The chart's `infra` values from the infra Services' ClusterIPs (name → IP): a host for each dependency
    (dependency_infra) among them; the embedded Prometheus is not one (the chart's schema refuses it)."""
    return {n: {"host": ip} for n, ip in cluster_ips.items() if n in dependency_infra(cfg)}


def ensure_local_infra(cfg: Config, target: KubeTarget, secret: str, out_dir: Path, images: Mapping[str, str],
                       say: Any = print, timeout_s: float = 180) -> Path:
    """Run the infra in target's namespace (idempotent), each component on `images[name]` (repository@sha256:…;
    see infra_documents), and return a values file with its hosts."""
    docs = infra_documents(cfg, secret, images, namespace=target.namespace)
    ensure_secret(target, secret)
    kubectl.apply(target, json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"]
    for name in names:
        res = kubectl.rollout_status(target, f"deployment/{name}", timeout_s=timeout_s)
        if not res.ok:
            raise DeployFailed(f"local infra {name} did not become ready in {timeout_s:.0f}s: "
                               f"{(res.stderr or res.stdout).strip()[-300:]}",
                               f"check `kubectl -n {target.namespace} describe deployment {name}`; "
                               "are the infra images built (invoke bases)?")
    hosts = chart_hosts(cfg, {n: kubectl.get_json(target, "service", n)["spec"]["clusterIP"] for n in names})
    path = out_dir / f"infra-{target.namespace}.yaml"
    atomic_write(path, yaml.safe_dump({"infra": hosts}, sort_keys=True))
    said = [f"{n} {h['host']}" for n, h in hosts.items()] + [n for n in names if n not in hosts]
    say(f"  local infra ready in {target.namespace}: " + ", ".join(said))
    return path


def template_annotations(docs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Deployment name → its pod template's annotations, of infra_documents' output (the embedded Prometheus's
    configuration hash: what infra_differences compares)."""
    return {str(d["metadata"]["name"]): dict(d["spec"]["template"]["metadata"].get("annotations") or {})
            for d in docs if d.get("kind") == "Deployment"}


def infra_differences(target: KubeTarget, images: Mapping[str, str],
                      annotations: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """How the infra Deployments in target's namespace differ from `images` ([infra.NAME] → repository@digest)
    and, when given, from `annotations` (name → pod template annotations that must be there with these values:
    template_annotations): one line per component that is missing, runs another image or configuration, or is
    not Ready; [] = they run exactly these. One cluster call (the resume check of the deploy stage)."""
    found = kubectl.get_json(target, "deployments", selector=f"{LABEL}=true").get("items", [])
    by_name = {d["metadata"]["name"]: d for d in found}
    out: list[str] = []
    for name, ref in images.items():
        d = by_name.get(name)
        if d is None:
            out.append(f"infra {name}: Deployment {name} does not exist")
            continue
        running = [str(c.get("image", "")) for c in d["spec"]["template"]["spec"].get("containers", [])]
        if not running or set(running) != {ref}:   # the Prometheus pod's discovery container runs it too
            out.append(f"infra {name} runs {', '.join(running) or 'nothing'}, not {ref}")
            continue
        have = d["spec"]["template"]["metadata"].get("annotations") or {}
        stale = [k for k, v in ((annotations or {}).get(name) or {}).items() if have.get(k) != v]
        if stale:
            out.append(f"infra {name} runs another configuration ({stale[0]} {have.get(stale[0], 'absent')})")
            continue
        want = int(d["spec"].get("replicas", 1))
        if int((d.get("status") or {}).get("readyReplicas", 0)) < want or want == 0:
            out.append(f"infra {name}: {int((d.get('status') or {}).get('readyReplicas', 0))}/{want} Ready")
    return out
