"""The embedded Prometheus ([infra.prometheus], run where `monitoring = "embedded"`): what its Deployment needs
beyond the other infra images (pipeline/local/infra.py).

- its configuration: the seed guide's scrape configuration (k8s/prometheus-config.yaml, the `prometheus.yml` of
  its ConfigMap: pod discovery by the `prometheus.io/scrape|port|path` annotations the chart puts on every
  service's pods, and the same relabelling, which gives `namespace`, `pod`, `service`, `environment` and `track`),
  with discovery limited to the release's namespace and a short scrape interval (SCRAPE_INTERVAL_S: a rollout's
  analysis judges windows of tens of seconds);
- its pod discovery: Debian's Prometheus 2.42 is built without `kubernetes_sd_configs` (it refuses the key:
  "field kubernetes_sd_configs not found"; client-go is not packaged), so a second container of the same pinned
  image (curl, jq: pipeline/local/recipes/prometheus) lists the namespace's pods from the API server with the
  ServiceAccount's token, writes them as a `file_sd_configs` file carrying the labels Kubernetes discovery gives
  (`__meta_kubernetes_namespace`, `__meta_kubernetes_pod_name`, `__meta_kubernetes_pod_ip`,
  `__meta_kubernetes_pod_annotation_<name>`, `__meta_kubernetes_pod_label_<name>`, names sanitized to
  [a-zA-Z0-9_] as Prometheus does), then watches the pods and lists again on the first change (or after
  WATCH_TIMEOUT_S), as Kubernetes discovery's list-and-watch does; only Running pods with an IP are listed, one
  target each (the relabelling puts the annotated port on it). It reaches the API at the `kubernetes` Service,
  whose endpoint on the pipeline's own cluster is the bridge gateway relay (pipeline/local/cluster/components.py);
- a ServiceAccount bound by a Role (not a ClusterRole) to `list` and `watch` pods in that namespace only: what the
  discovery asks, nothing else, nowhere else;
- the configuration's hash as a pod annotation, so a changed configuration restarts it (Prometheus does not
  reload a mounted file by itself).
An environment that names its operators' Prometheus (`[environments.<env>.rollout] prometheus = URL`) is read
there instead (pipeline/stages/deploy/monitoring.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config import EMBEDDED_PROMETHEUS
from pipeline.core.errors import UsageError

NAME = EMBEDDED_PROMETHEUS
SEED_CONFIG = Path("k8s/prometheus-config.yaml")   # under the project root
CONFIGMAP = "prometheus-config"
SERVICE_ACCOUNT = "prometheus"
ROLE = "prometheus-pod-discovery"
SCRAPE_INTERVAL_S = 5
WATCH_TIMEOUT_S = 30
CONFIG_HASH = "veza.pipeline/config-sha256"
TARGETS_FILE = "/discovery/pods.json"

# pods of the API's PodList → file_sd target groups with Kubernetes discovery's meta labels
_TARGETS_JQ = (
    '[.items[] | select(.status.phase == "Running" and .status.podIP != null) | '
    '{targets: [.status.podIP], labels: ({"__meta_kubernetes_namespace": .metadata.namespace, '
    '"__meta_kubernetes_pod_name": .metadata.name, "__meta_kubernetes_pod_ip": .status.podIP} '
    '+ ((.metadata.annotations // {}) | with_entries(.key |= "__meta_kubernetes_pod_annotation_" '
    '+ gsub("[^a-zA-Z0-9_]"; "_"))) '
    '+ ((.metadata.labels // {}) | with_entries(.key |= "__meta_kubernetes_pod_label_" '
    '+ gsub("[^a-zA-Z0-9_]"; "_"))))}]')
# List, write the targets file (replaced atomically), then block on a watch from the list's resourceVersion until
# its first event (or its timeout) and list again. The token reaches curl as a header file on a pipe, never in
# its argv; it is read again for each request. A failure says what answered and retries after 2 s.
DISCOVER_SH = f"""set -u
sa=/var/run/secrets/kubernetes.io/serviceaccount
api="https://${{KUBERNETES_SERVICE_HOST}}:${{KUBERNETES_SERVICE_PORT}}/api/v1/namespaces/$(cat $sa/namespace)/pods"
out={TARGETS_FILE}
[ -f "$out" ] || echo '[]' > "$out"
auth() {{ printf 'Authorization: Bearer %s\\n' "$(cat $sa/token)"; }}
while true; do
  code=$(curl -sS --max-time 5 --cacert $sa/ca.crt -H @<(auth) -o "$out.raw" -w '%{{http_code}}' "$api" \\
         2>"$out.err") || true
  if [ "$code" = 200 ] && jq -c '{_TARGETS_JQ}' "$out.raw" > "$out.tmp"; then
    mv "$out.tmp" "$out"
    rv=$(jq -r '.metadata.resourceVersion' "$out.raw")
    exec 3< <(exec curl -sSN --max-time {WATCH_TIMEOUT_S + 5} --cacert $sa/ca.crt -H @<(auth) \\
              "$api?watch=1&resourceVersion=$rv&timeoutSeconds={WATCH_TIMEOUT_S}" 2>/dev/null)
    watcher=$!
    read -r -n 1 -t {WATCH_TIMEOUT_S + 5} _ <&3 || true
    kill "$watcher" 2>/dev/null
    exec 3<&-
    sleep 0.5
  else
    echo "pod discovery: $api answered ${{code:-nothing}}: $(tail -c 300 "$out.err")" >&2
    sleep 2
  fi
done
"""


def scrape_config(root: Path) -> str:
    """`prometheus.yml` for the embedded Prometheus: the seed guide's (SEED_CONFIG under `root`) with each
    `kubernetes_sd_configs` (role pod) replaced by the discovery container's file (the pods of the namespace the
    Prometheus runs in, the only one its Role lets it list), and scrape/evaluation every SCRAPE_INTERVAL_S
    seconds; the relabelling is kept as it is. UsageError when the seed file has no ConfigMap
    `prometheus-config` with a `prometheus.yml` that holds scrape_configs, or discovers another role."""
    path = root / SEED_CONFIG
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read the Prometheus scrape configuration: {exc}",
                         f"restore {SEED_CONFIG} (the seed guide's monitoring section)") from None
    found = [d for d in docs if d.get("kind") == "ConfigMap" and (d.get("metadata") or {}).get("name") == CONFIGMAP]
    text = (found[0].get("data") or {}).get("prometheus.yml") if found else None
    conf = yaml.safe_load(text) if isinstance(text, str) else None
    if not isinstance(conf, dict) or not isinstance(conf.get("scrape_configs"), list):
        raise UsageError(f"{path}: no ConfigMap {CONFIGMAP} with a prometheus.yml holding scrape_configs",
                         f"restore {SEED_CONFIG} (the seed guide's monitoring section)")
    interval = f"{SCRAPE_INTERVAL_S}s"
    conf["global"] = {**(conf.get("global") or {}), "scrape_interval": interval, "evaluation_interval": interval,
                      "scrape_timeout": f"{max(1, SCRAPE_INTERVAL_S - 1)}s"}
    for job in conf["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", None) or ():
            if sd.get("role") != "pod":
                raise UsageError(f"{path}: job {job.get('job_name')}: kubernetes_sd_configs role "
                                 f"{sd.get('role')!r} is not discovered here", "use role: pod")
            job["file_sd_configs"] = [{"files": [TARGETS_FILE], "refresh_interval": "30s"}]
    return yaml.safe_dump(conf, sort_keys=False)


def config_hash(config: str) -> str:
    """sha256 of the configuration and the discovery script: the pod annotation that restarts it on a change."""
    return "sha256:" + hashlib.sha256((config + DISCOVER_SH).encode()).hexdigest()


def extra_documents(namespace: str, labels: dict[str, str], config: str) -> list[dict[str, Any]]:
    """The ConfigMap with `config` and the discovery script, the ServiceAccount, and the Role + RoleBinding that
    let it discover the pods of `namespace` (pods: list, watch; nothing else, nowhere else)."""
    meta = {"labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIGMAP, **meta},
         "data": {"prometheus.yml": config, "discover.sh": DISCOVER_SH}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": ROLE, **meta},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": ROLE, **meta},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]},
    ]


def shape_pod(pod_spec: dict[str, Any], pod_meta: dict[str, Any], container: dict[str, Any], port: int,
              config: str) -> None:
    """Make the generic infra pod a Prometheus pod, in place: its ServiceAccount (with the token discovery
    needs), the ConfigMap mounted at /etc/prometheus, the TSDB on an emptyDir, readiness on /-/ready, and the
    discovery container (same image, same restricted securityContext) writing the targets file both mount."""
    pod_spec["serviceAccountName"] = SERVICE_ACCOUNT
    pod_spec["automountServiceAccountToken"] = True
    pod_spec["volumes"] += [{"name": "config", "configMap": {"name": CONFIGMAP}},
                            {"name": "discovery", "emptyDir": {}}]
    discovery = {**container, "name": "discovery", "ports": [], "env": [],
                 "command": ["/bin/bash", "/etc/prometheus/discover.sh"],
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
                                  {"name": "discovery", "mountPath": "/discovery"}],
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                               "limits": {"cpu": "200m", "memory": "64Mi"}}}
    discovery.pop("readinessProbe", None)
    pod_spec["containers"].append(discovery)
    pod_meta.setdefault("annotations", {})[CONFIG_HASH] = config_hash(config)
    container["args"] = ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                         f"--web.listen-address=:{port}", "--storage.tsdb.retention.time=6h"]
    container["volumeMounts"] += [{"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
                                  {"name": "data", "mountPath": "/prometheus"},
                                  {"name": "discovery", "mountPath": "/discovery", "readOnly": True}]
    container["readinessProbe"] = {"httpGet": {"path": "/-/ready", "port": port}, "periodSeconds": 2}
