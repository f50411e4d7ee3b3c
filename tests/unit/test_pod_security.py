"""The Pod Security gate: the restricted profile's controls on pod templates, and the chart passes it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.config import load_config
from pipeline.core.errors import PolicyBlocked
from pipeline.gate.pod_security import check_restricted, enforce_restricted, enforcement_note, parse_manifests

ROOT = Path(__file__).resolve().parents[2]


def _deployment(**container_sc: Any) -> dict[str, Any]:
    sc = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, **container_sc}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "veza-dev"},
            "spec": {"template": {"metadata": {}, "spec": {
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "web", "image": "x@sha256:" + "a" * 64, "securityContext": sc}],
                "volumes": [{"name": "tmp", "emptyDir": {}}]}}}}


def _fields(doc: dict[str, Any]) -> list[str]:
    return [v.field for v in check_restricted([doc])]


def test_a_restricted_pod_template_passes() -> None:
    assert check_restricted([_deployment()]) == []
    assert enforce_restricted([_deployment()]) == 1


def test_a_privileged_container_blocks_with_exit_3_and_one_line_naming_object_and_field() -> None:
    with pytest.raises(PolicyBlocked) as exc:
        enforce_restricted([_deployment(privileged=True)], where="veza-dev")
    line = exc.value.one_line()
    assert exc.value.exit_code == 3
    assert "\n" not in line
    assert "Deployment veza-dev/web" in line
    assert "spec.template.spec.containers[0](name=web).securityContext.privileged" in line
    assert "Privileged Containers" in line


@pytest.mark.parametrize(("sc", "said"), [
    ({"privileged": True}, "securityContext.privileged is true;"),
    ({"appArmorProfile": {"type": "Unconfined"}}, "appArmorProfile.type is Unconfined;"),
    ({"procMount": "Unmasked"}, "securityContext.procMount is Unmasked;"),
    ({"seccompProfile": {"type": ""}}, 'seccompProfile.type is "";'),
])
def test_a_violation_names_the_value_as_the_manifest_spells_it(sc: dict[str, Any], said: str) -> None:
    """YAML's words (true, a bare string), never Python's repr (True, 'Unconfined'): the line is read against
    the chart's source."""
    lines = [v.line() for v in check_restricted([_deployment(**sc)])]
    assert any(said in line for line in lines), lines
    assert not any("True" in line or "'" in line for line in lines), lines


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda s: s.update(hostNetwork=True), "spec.template.spec.hostNetwork"),
    (lambda s: s.update(hostPID=True), "spec.template.spec.hostPID"),
    (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
     "spec.template.spec.volumes[1](name=h).hostPath"),
    (lambda s: s["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}),
     "spec.template.spec.volumes[1](name=n).nfs"),
    (lambda s: s["securityContext"].update(runAsUser=0), "spec.template.spec.securityContext.runAsUser"),
    (lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
     "spec.template.spec.securityContext.sysctls[0].name"),
    (lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
     "spec.template.spec.containers[0](name=web).ports[0].hostPort"),
])
def test_pod_level_controls(mutate: Any, field: str) -> None:
    doc = _deployment()
    mutate(doc["spec"]["template"]["spec"])
    assert field in _fields(doc)


@pytest.mark.parametrize(("sc", "field"), [
    ({"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation"),
    ({"allowPrivilegeEscalation": None}, "allowPrivilegeEscalation"),
    ({"runAsNonRoot": False}, "runAsNonRoot"),          # the container's false overrides the pod's true
    ({"runAsUser": 0}, "runAsUser"),
    ({"capabilities": {"drop": ["NET_RAW"]}}, "capabilities.drop"),
    ({"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}, "capabilities.add[0]"),
    ({"seccompProfile": {"type": "Unconfined"}}, "seccompProfile.type"),
    ({"procMount": "Unmasked"}, "procMount"),
    ({"seLinuxOptions": {"type": "spc_t"}}, "seLinuxOptions.type"),
])
def test_container_level_controls(sc: dict[str, Any], field: str) -> None:
    doc = _deployment(**sc)
    if sc.get("allowPrivilegeEscalation", False) is None:
        del doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    assert f"spec.template.spec.containers[0](name=web).securityContext.{field}" in _fields(doc)


def test_net_bind_service_may_be_added() -> None:
    assert _fields(_deployment(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})) == []


def test_non_root_and_seccomp_may_be_set_per_container_instead_of_per_pod() -> None:
    doc = _deployment(runAsNonRoot=True, seccompProfile={"type": "Localhost", "localhostProfile": "p.json"})
    doc["spec"]["template"]["spec"]["securityContext"] = {}
    assert _fields(doc) == []
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"].pop("seccompProfile")
    assert _fields(doc) == ["spec.template.spec.containers[0](name=web).securityContext.seccompProfile.type"]


def test_init_containers_are_checked_too() -> None:
    doc = _deployment()
    doc["spec"]["template"]["spec"]["initContainers"] = [{"name": "init", "image": "x"}]
    fields = _fields(doc)
    assert "spec.template.spec.initContainers[0](name=init).securityContext.allowPrivilegeEscalation" in fields
    assert "spec.template.spec.initContainers[0](name=init).securityContext.capabilities.drop" in fields


def test_apparmor_annotation_must_be_runtime_default_or_localhost() -> None:
    doc = _deployment()
    doc["spec"]["template"]["metadata"]["annotations"] = {
        "container.apparmor.security.beta.kubernetes.io/web": "unconfined"}
    assert [v.control for v in check_restricted([doc])] == ["AppArmor"]
    doc["spec"]["template"]["metadata"]["annotations"] = {
        "container.apparmor.security.beta.kubernetes.io/web": "runtime/default"}
    assert check_restricted([doc]) == []


def test_pods_cronjobs_and_lists_are_found_other_kinds_ignored() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p"},
           "spec": copy.deepcopy(_deployment(privileged=True)["spec"]["template"]["spec"])}
    template = copy.deepcopy(_deployment(privileged=True)["spec"]["template"])
    cron = {"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": template}}}}
    text = yaml.safe_dump_all([{"kind": "Service", "metadata": {"name": "s"}, "spec": {}},
                               {"kind": "List", "items": [pod]}, None, cron])
    found = check_restricted(parse_manifests(text))
    assert [(v.kind, v.name, v.field) for v in found] == [
        ("Pod", "p", "spec.containers[0](name=web).securityContext.privileged"),
        ("CronJob", "c", "spec.jobTemplate.spec.template.spec.containers[0](name=web).securityContext.privileged")]


@pytest.mark.parametrize("env", ["local", "dev", "staging", "prod"])
def test_the_chart_as_each_environment_renders_it_passes(env: str) -> None:
    from pipeline.tools import helm

    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    digests = ROOT / "helm/veza/ci/digests-values.yaml"
    text = helm.template(ROOT / "helm/veza", "veza", [cfg.env(env).values_file, digests], namespace=f"veza-{env}")
    assert enforce_restricted(text) == 4


def test_the_local_infra_deployments_pass() -> None:
    from pipeline.local.infra import infra_documents, placeholder_images

    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    for env, pods in (("local", 4), ("dev", 3)):   # local: the embedded Prometheus too (monitoring = "embedded")
        docs = infra_documents(cfg, "veza-secrets", placeholder_images(cfg, cfg.env(env)), namespace=f"veza-{env}")
        assert enforce_restricted(docs) == pods


def test_enforcement_note_says_what_1_20_does_not_enforce() -> None:
    note = enforcement_note("v1.20.2")
    assert "no Pod Security admission" in note and "NetworkPolicies" in note and "1.20.2" in note
    assert "enforces the namespace's pod-security" in enforcement_note("v1.31.9")
