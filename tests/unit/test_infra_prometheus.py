"""The embedded Prometheus ([infra.prometheus], where `monitoring = "embedded"`): which environments run it (checked
at load), the seed guide's scrape configuration with file discovery standing in for Kubernetes discovery,
namespaced RBAC that lets it list and watch pods and nothing else, its pod shaped for it (restricted Pod Security),
the chart's hosts without it, and the choice between an external and the embedded Prometheus."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError, StageFailed, UsageError
from pipeline.core.release_images import release_subjects
from pipeline.gate.pod_security import enforce_restricted
from pipeline.local import infra_prometheus
from pipeline.local.infra import chart_hosts, infra_documents, placeholder_images
from pipeline.stages.deploy.monitoring import Monitoring, source

ROOT = Path(__file__).resolve().parents[2]


def _docs(namespace: str = "veza-local") -> list[dict[str, Any]]:
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    return infra_documents(cfg, "veza-secrets", placeholder_images(cfg, cfg.env("local")), namespace=namespace)


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [(d["kind"], d["metadata"]["name"]) for d in docs])
    return found[0]


def test_the_local_environment_runs_it_as_one_more_infra_image_and_the_others_do_not() -> None:
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    assert cfg.env("local").monitoring == "embedded"
    assert "infra/prometheus" in release_subjects(cfg, cfg.env("local"))   # pushed, signed, verified, pinned
    for env in ("dev", "staging", "prod"):
        assert cfg.env(env).monitoring == "none"
        assert "infra/prometheus" not in release_subjects(cfg, cfg.env(env))
    assert cfg.infra["prometheus"].port == 9090
    assert cfg.bases[cfg.infra["prometheus"].base].local == "veza-local/prometheus:2.42-sd"


def _local_lines(text: str, local_infra: str, monitoring: str) -> str:
    """pipeline.toml with [environments.local]'s local_infra and monitoring lines replaced."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith('monitoring = "embedded"'))
    assert lines[i - 1].startswith("local_infra = true")      # the local environment's, just before
    lines[i - 1:i + 1] = [f"local_infra = {local_infra}", f"monitoring = {monitoring}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("local_infra", "monitoring", "tail", "without_infra", "said"), [
    ("false", '"embedded"', "", False, "local_infra is false"),
    ("true", '"embedded"', '[environments.local.rollout]\nprometheus = "https://prom.example.org"\n', False,
     "rollout.prometheus names https://prom.example.org"),
    ("true", '"embedded"', "", True, "no [infra.prometheus]"),
    ("true", '"sidecar"', "", False, "sidecar"),
])
def test_embedded_monitoring_is_checked_at_load(tmp_path: Path, local_infra: str, monitoring: str, tail: str,
                                                without_infra: bool, said: str) -> None:
    text = _local_lines((ROOT / "pipeline.toml").read_text(), local_infra, monitoring) + tail
    if without_infra:
        text = text.replace('[infra.prometheus]\nbase = "prometheus"\nport = 9090\n', "")
    (tmp_path / "pipeline.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "pipeline.toml", check_files=False)
    assert said in err.value.message and "environments.local.monitoring" in err.value.message
    assert "\n" not in err.value.message and err.value.hint
    ok = _local_lines((ROOT / "pipeline.toml").read_text(), "true", '"none"') + tail   # the same, opted out
    (tmp_path / "pipeline.toml").write_text(ok)
    assert load_config(tmp_path / "pipeline.toml", check_files=False).env("local").monitoring == "none"


def test_the_scrape_configuration_is_the_seed_guides_with_file_discovery() -> None:
    seed_doc = next(d for d in yaml.safe_load_all((ROOT / "k8s/prometheus-config.yaml").read_text())
                    if d and d["kind"] == "ConfigMap")
    seed = yaml.safe_load(seed_doc["data"]["prometheus.yml"])
    conf = yaml.safe_load(_named(_docs(), "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    job, seed_job = conf["scrape_configs"][0], seed["scrape_configs"][0]
    assert job["relabel_configs"] == seed_job["relabel_configs"]          # the same relabelling
    assert {"source_labels": ["__meta_kubernetes_pod_label_veza_io_track"], "target_label": "track"} in \
        job["relabel_configs"]
    assert seed_job["kubernetes_sd_configs"][0]["role"] == "pod"
    # Debian's 2.42 has no Kubernetes discovery: the discovery container's file stands in for it
    assert "kubernetes_sd_configs" not in job
    assert job["file_sd_configs"][0]["files"] == [infra_prometheus.TARGETS_FILE]
    assert job["relabel_configs"][0] == {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                                         "action": "keep", "regex": "true"}
    assert conf["global"]["scrape_interval"] == f"{infra_prometheus.SCRAPE_INTERVAL_S}s"


def test_a_seed_file_without_the_scrape_configuration_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s/prometheus-config.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n")
    with pytest.raises(UsageError) as err:
        infra_prometheus.scrape_config(tmp_path)
    assert "prometheus-config" in err.value.message and "\n" not in err.value.message and err.value.hint


def test_its_rbac_lists_and_watches_pods_in_its_namespace_only() -> None:
    docs = _docs("veza-dev")
    assert not [d for d in docs if d["kind"].startswith("Cluster")]        # no cluster-wide grant
    role = _named(docs, "Role", "prometheus-pod-discovery")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    binding = _named(docs, "RoleBinding", "prometheus-pod-discovery")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "prometheus-pod-discovery"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "veza-dev"}]
    _named(docs, "ServiceAccount", "prometheus")
    script = _named(docs, "ConfigMap", "prometheus-config")["data"]["discover.sh"]
    assert "watch=1" in script and "/api/v1/namespaces/$(cat $sa/namespace)/pods" in script   # what it asks
    assert "Bearer" in script and "-H @<(auth)" in script     # the token on a pipe, never in curl's argv


def test_its_pod_mounts_the_config_restarts_when_it_changes_and_passes_restricted() -> None:
    docs = _docs("veza-dev")
    dep = _named(docs, "Deployment", "prometheus")
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "prometheus" and spec["automountServiceAccountToken"] is True
    assert {"name": "config", "configMap": {"name": "prometheus-config"}} in spec["volumes"]
    c = spec["containers"][0]
    assert "--config.file=/etc/prometheus/prometheus.yml" in c["args"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": 9090}
    annotation = dep["spec"]["template"]["metadata"]["annotations"][infra_prometheus.CONFIG_HASH]
    config = _named(docs, "ConfigMap", "prometheus-config")["data"]
    assert annotation == infra_prometheus.config_hash(config["prometheus.yml"])
    assert infra_prometheus.config_hash(config["prometheus.yml"] + "# changed\n") != annotation   # restarts it
    disc = spec["containers"][1]
    assert disc["name"] == "discovery" and disc["image"] == c["image"]            # the same pinned image
    assert disc["command"] == ["/bin/bash", "/etc/prometheus/discover.sh"]
    assert disc["securityContext"] == c["securityContext"]
    assert {"name": "discovery", "mountPath": "/discovery", "readOnly": True} in c["volumeMounts"]
    pg = _named(docs, "Deployment", "postgres")["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pg                                          # the others get no API token
    assert enforce_restricted(docs) == 4   # postgres, redis, nats, prometheus: restricted Pod Security


def test_the_chart_gets_the_hosts_of_what_its_services_use_and_not_prometheus() -> None:
    """The chart's schema refuses infra.prometheus ("Additional property prometheus is not allowed"); every other
    component's ClusterIP is a host. Rendered with the real Helm."""
    from pipeline.tools import helm

    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    ips = {"postgres": "10.0.0.10", "redis": "10.0.0.11", "nats": "10.0.0.12", "prometheus": "10.0.0.13"}
    hosts = chart_hosts(cfg, ips)
    assert hosts == {"postgres": {"host": "10.0.0.10"}, "redis": {"host": "10.0.0.11"}, "nats": {"host": "10.0.0.12"}}
    digests = ROOT / "helm/veza/ci/digests-values.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        values = Path(tmp) / "infra.yaml"
        values.write_text(yaml.safe_dump({"infra": hosts}))
        helm.template(ROOT / "helm/veza", "veza", [cfg.env("local").values_file, digests, values],
                      namespace="veza-local")   # the schema accepts it
        values.write_text(yaml.safe_dump({"infra": {n: {"host": ip} for n, ip in ips.items()}}))
        with pytest.raises(StageFailed, match="prometheus"):   # every ClusterIP as a host: refused
            helm.template(ROOT / "helm/veza", "veza", [cfg.env("local").values_file, digests, values],
                          namespace="veza-local")


def test_the_environment_s_prometheus_is_external_embedded_or_none() -> None:
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    local = cfg.env("local")
    assert source(local) == "embedded"
    assert source(local, external_cluster=True) == "none"      # no local infra on an external cluster
    url = dataclasses.replace(local, monitoring="none",
                              rollout=dataclasses.replace(local.rollout, prometheus="https://prom.example.org"))
    assert source(url) == source(url, external_cluster=True) == "external"
    assert source(cfg.env("dev")) == "none"
    assert source(dataclasses.replace(local, local_infra=False)) == "none"
    down = Monitoring("embedded", "svc/prometheus in veza-dev", False, problem="not ready")
    assert down.line() == "monitoring: embedded Prometheus at svc/prometheus in veza-dev: DOWN (not ready)"
    assert Monitoring("external", "https://p", True, 3, 4).line().endswith(": up, 3/4 scrape target(s) up")
    assert Monitoring("embedded", "svc/prometheus in veza-dev", True, 0, 0).line().endswith(
        ": up, 0/0 scrape target(s) up (it scrapes nothing: no pod discovered)")
    some = Monitoring("embedded", "svc/prometheus in veza-dev", True, 3, 3, scraped=("a", "b"), unscraped=("c",))
    assert some.line().endswith("3/3 scrape target(s) up; scraping a, b; NOT scraping c "
                                "(yet: a new pod is scraped within a few seconds)")


def test_the_deploy_resumes_only_while_prometheus_runs_the_current_configuration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """infra_differences, on Deployments as the cluster would answer them: both Prometheus containers on the pinned
    digest pass; a pod template whose configuration hash is not the current one's (k8s/prometheus-config.yaml
    changed since) is a difference, so the deploy applies it again."""
    import pipeline.local.infra as infra_mod
    from pipeline.local.infra import infra_differences, template_annotations
    from pipeline.tools.kubectl import KubeTarget

    docs = _docs("veza-local")
    live = [dict(d, status={"readyReplicas": 1}) for d in docs if d["kind"] == "Deployment"]
    monkeypatch.setattr(infra_mod.kubectl, "get_json", lambda *a, **k: {"items": live})
    images = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"] for d in live}
    target = KubeTarget(Path("/nonexistent"), "", "veza-local")
    wanted = template_annotations(docs)
    assert wanted["prometheus"][infra_prometheus.CONFIG_HASH].startswith("sha256:")
    assert infra_differences(target, images, wanted) == []
    old = {**wanted, "prometheus": {infra_prometheus.CONFIG_HASH: "sha256:" + "0" * 64}}
    (line,) = infra_differences(target, images, old)
    assert line.startswith("infra prometheus runs another configuration (veza.pipeline/config-sha256 sha256:")
