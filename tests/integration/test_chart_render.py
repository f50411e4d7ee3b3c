"""Offline checks of helm/veza and k8s/: lint, render per environment, schema validation for Kubernetes 1.20
and a current version, and the chart's rules (digest-only images, restricted pods, secrets by reference,
network policies, protocols). Needs the Helm binaries of .tools/bin, no cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.errors import StageFailed
from pipeline.core.paths import ROOT, TOOLS_BIN
from pipeline.tools import helm
from tests.integration.chart_fixtures import CHART, DIGESTS, ENVS, render, validate

KUBE_VERSIONS = ("1.20.0", "1.31.0", "1.37.0")
HELMS = {"helm3": TOOLS_BIN / "helm", "helm4": TOOLS_BIN / "helm4"}


@pytest.fixture(params=sorted(HELMS), autouse=True)
def which_helm(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = HELMS[request.param]
    if not path.exists():
        pytest.fail(f"{path} missing: run invoke bootstrap")
    monkeypatch.setenv(helm.HELM_ENV, str(path))
    yield request.param


def _kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in _kinds(docs, "Deployment")]


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("kube", ("1.20.0", "1.31.0"))
def test_lint_strict_is_clean(env: str, kube: str) -> None:
    res = helm.lint(CHART, [CHART / f"values-{env}.yaml", DIGESTS], strict=True, kube_version=kube)
    assert res.ok, res.stdout + res.stderr
    assert "[WARNING]" not in res.stdout and "[ERROR]" not in res.stdout


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_rendered_manifests_validate_against_kubernetes_schemas(env: str, kube: str) -> None:
    docs = render(env, kube)
    assert {"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "PersistentVolumeClaim",
            "ServiceAccount", "ConfigMap"} <= {d["kind"] for d in docs}
    for d in docs:
        validate(d, kube)


@pytest.mark.parametrize("kube,api", [("1.20.0", "policy/v1beta1"), ("1.31.0", "policy/v1")])
def test_pdb_api_version_follows_the_cluster(kube: str, api: str) -> None:
    pdbs = _kinds(render("prod", kube), "PodDisruptionBudget")
    assert len(pdbs) == 4 and {p["apiVersion"] for p in pdbs} == {api}
    by_name = {p["metadata"]["name"]: p["spec"] for p in pdbs}
    assert by_name["veza-backend-api"] == {"minAvailable": 2, "selector": by_name["veza-backend-api"]["selector"]}
    # one replica: minAvailable would block drains; the chart uses maxUnavailable
    assert by_name["veza-stream-server"]["maxUnavailable"] == 1


@pytest.mark.parametrize("env", ENVS)
def test_images_are_pinned_by_digest(env: str) -> None:
    for spec in _pod_specs(render(env, "1.31.0")):
        for c in spec["containers"]:
            repo, _, digest = c["image"].partition("@")
            assert digest.startswith("sha256:") and len(digest) == 71, c["image"]
            assert ":" not in repo.rsplit("/", 1)[-1]


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_tag_alone_is_refused_for_staging_and_prod(env: str, tmp_path: Path) -> None:
    tag_only = tmp_path / "tag.yaml"
    tag_only.write_text(yaml.safe_dump({"services": {"veza-docs": {"image": {"digest": "", "tag": "1.2.3"}}}}))
    with pytest.raises(StageFailed, match=r"veza-docs.image: a tag alone .*refused in environment"):
        render(env, "1.31.0", tag_only)


def test_tag_is_accepted_for_dev_but_digest_wins(tmp_path: Path) -> None:
    tag_only = tmp_path / "tag.yaml"
    tag_only.write_text(yaml.safe_dump({"services": {"veza-docs": {"image": {"digest": "", "tag": "1.2.3"}}}}))
    images = {c["image"] for s in _pod_specs(render("dev", "1.31.0", tag_only)) for c in s["containers"]}
    assert "127.0.0.1:5000/veza-dev/veza-docs:1.2.3" in images


@pytest.mark.parametrize("bad,match", [
    ({"digest": "sha256:abc"}, "values don't meet the specifications|is not a sha256 digest"),
    ({"repository": "r/x:1.0"}, "must not carry a tag or digest"),
    ({"tagg": "1"}, "(?i)additional propert(y|ies) '?tagg'? (is )?not allowed"),
])
def test_bad_image_values_are_refused(bad: dict[str, str], match: str, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"services": {"veza-docs": {"image": bad}}}))
    with pytest.raises(StageFailed, match=match):
        render("local", "1.31.0", f)


@pytest.mark.parametrize("env", ENVS)
def test_pods_meet_the_restricted_profile(env: str) -> None:
    for spec in _pod_specs(render(env, "1.31.0")):
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1001
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            assert c["livenessProbe"]["httpGet"]["path"] == "/health"
            assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
            assert c["resources"]["requests"] and c["resources"]["limits"]


@pytest.mark.parametrize("env", ENVS)
def test_every_port_declares_its_protocol(env: str) -> None:
    docs = render(env, "1.31.0")
    for spec in _pod_specs(docs):
        for c in spec["containers"]:
            assert all(p.get("protocol") == "TCP" for p in c["ports"])
    for svc in _kinds(docs, "Service"):
        assert all(p.get("protocol") == "TCP" for p in svc["spec"]["ports"])
    for np in _kinds(docs, "NetworkPolicy"):
        for rule in np["spec"]["ingress"] + np["spec"]["egress"]:
            assert all(p.get("protocol") in ("TCP", "UDP") for p in rule["ports"])


@pytest.mark.parametrize("env", ENVS)
def test_secrets_only_by_reference(env: str) -> None:
    docs = render(env, "1.31.0")
    assert not _kinds(docs, "Secret")
    by_name = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in _kinds(docs, "Deployment")}
    api_env = {e["name"]: e for e in by_name["veza-backend-api"]["containers"][0]["env"]}
    for var, key in (("DB_PASSWORD", "db-password"), ("JWT_SECRET", "jwt-secret")):
        assert api_env[var] == {"name": var, "valueFrom": {"secretKeyRef": {"name": "veza-secrets", "key": key}}}
    for spec in by_name.values():
        for e in spec["containers"][0]["env"]:
            if any(w in e["name"] for w in ("PASSWORD", "SECRET", "TOKEN")):
                assert "value" not in e, e


def test_backend_api_reaches_only_postgres_and_redis() -> None:
    for env in ENVS:
        nps = {d["metadata"]["name"]: d["spec"] for d in _kinds(render(env, "1.31.0"), "NetworkPolicy")}
        api = nps["veza-backend-api"]
        ports = sorted((p["port"], p["protocol"]) for r in api["egress"] for p in r["ports"])
        assert ports == [(53, "TCP"), (53, "UDP"), (5432, "TCP"), (6379, "TCP")], env
        assert api["policyTypes"] == ["Ingress", "Egress"]
        chat = sorted(p["port"] for r in nps["veza-chat-server"]["egress"] for p in r["ports"])
        assert chat == [53, 53, 4222]
        assert sorted(p["port"] for r in nps["veza-docs"]["egress"] for p in r["ports"]) == [53, 53]
    prod = {d["metadata"]["name"]: d["spec"] for d in _kinds(render("prod", "1.31.0"), "NetworkPolicy")}
    pg = [r for r in prod["veza-backend-api"]["egress"] if r["ports"][0]["port"] == 5432][0]
    assert pg["to"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "postgres"}}


def test_stream_server_has_its_claim_and_recreate_strategy() -> None:
    docs = render("prod", "1.31.0")
    pvc = _kinds(docs, "PersistentVolumeClaim")
    assert [p["metadata"]["name"] for p in pvc] == ["veza-stream-server"]
    assert pvc[0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    dep = {d["metadata"]["name"]: d for d in _kinds(docs, "Deployment")}["veza-stream-server"]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    vol = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}["data"]
    assert vol["persistentVolumeClaim"]["claimName"] == "veza-stream-server"


@pytest.mark.parametrize("env", [e for e in ENVS if e != "local"])
def test_stateful_claims_survive_an_uninstall(env: str) -> None:
    """issue 15: in every non-local environment no uninstall (nor a removed failed first install) deletes data."""
    pvcs = _kinds(render(env, "1.31.0"), "PersistentVolumeClaim")
    assert pvcs, f"{env} renders no claim"
    for pvc in pvcs:
        assert pvc["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep", pvc["metadata"]


@pytest.mark.parametrize("kube,api", [("1.20.0", "networking.k8s.io/v1"), ("1.37.0", "networking.k8s.io/v1")])
def test_ingress_per_service_when_enabled(kube: str, api: str) -> None:
    assert not _kinds(render("local", kube), "Ingress")
    ings = _kinds(render("prod", kube), "Ingress")
    assert {i["metadata"]["name"] for i in ings} == {"veza-backend-api", "veza-chat-server", "veza-stream-server",
                                                    "veza-docs"}
    assert {i["apiVersion"] for i in ings} == {api}


def test_replicas_per_environment() -> None:
    def replicas(env: str) -> dict[str, int]:
        return {d["metadata"]["name"]: d["spec"]["replicas"] for d in _kinds(render(env, "1.31.0"), "Deployment")}

    assert set(replicas("local").values()) == {1}
    assert replicas("prod")["veza-backend-api"] == 3 and replicas("staging")["veza-backend-api"] == 2


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_k8s_cluster_manifests_validate(kube: str) -> None:
    files = sorted((ROOT / "k8s").glob("*.yaml"))
    assert {f.name for f in files} >= {"namespaces.yaml", "network-policies.yaml", "prometheus-config.yaml",
                                       "logging-config.yaml"}
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    for d in docs:
        validate(d, kube)
    for ns in _kinds(docs, "Namespace"):
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] in ("restricted", "baseline")
    deny = _kinds(docs, "NetworkPolicy")
    assert {d["metadata"]["namespace"] for d in deny if d["spec"]["podSelector"] == {}} == {
        "veza-dev", "veza-staging", "veza-prod"}
    cms = {c["metadata"]["name"]: c for c in _kinds(docs, "ConfigMap")}
    scrape = yaml.safe_load(cms["prometheus-config"]["data"]["prometheus.yml"])
    assert scrape["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"] == "pod"
    assert "[INPUT]" in cms["fluent-bit-config"]["data"]["fluent-bit.conf"]


def test_helm_binary_override_selects_helm4(which_helm: str) -> None:
    assert helm.helm().major == (4 if which_helm == "helm4" else 3)
    assert os.environ[helm.HELM_ENV].endswith("helm4" if which_helm == "helm4" else "helm")
