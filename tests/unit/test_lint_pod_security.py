"""`invoke lint` flags what the Pod Security Standards forbid, wherever a workload is found, at HIGH (blocking).

The controls are the deploy gate's (pipeline/gate/pod_security.py, tested control by control in
test_pod_security_standards.py); here: that lint runs them on every workload kind, on `kind: List` and `*List`
items, in committed manifests, Kustomize patches and rendered Helm output, with the field's line.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.lint.charts import Rendered, split_rendered
from pipeline.lint.findings import LintFinding, merge_same_problem
from pipeline.lint.rules import k8s_rules, load_yaml_docs, patch_rules
from pipeline.lint.run import rendered_rule_findings

IMAGE = "registry.example/web@sha256:" + "a" * 64


def pod_spec() -> dict[str, Any]:
    """A pod spec that meets the restricted profile and every VZ rule (no probes: a bare Pod, a Job)."""
    return {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "web", "image": IMAGE,
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                          "limits": {"cpu": "100m", "memory": "64Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "tmp", "emptyDir": {}}]}


def pod(spec: dict[str, Any] | None = None, name: str = "p") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec or pod_spec()}


def _c(s: dict[str, Any]) -> dict[str, Any]:
    return s["containers"][0]["securityContext"]  # type: ignore[no-any-return]


# The 14 single-control violations TOOLCHAIN.md measured (`invoke lint` blocked 7 of them before).
SINGLE: dict[str, tuple[Any, str, str]] = {
    "host network": (lambda s: s.update(hostNetwork=True), "PSS-hostNamespaces", "hostNetwork"),
    "host PID": (lambda s: s.update(hostPID=True), "PSS-hostNamespaces", "hostPID"),
    "host IPC": (lambda s: s.update(hostIPC=True), "PSS-hostNamespaces", "hostIPC"),
    "privileged": (lambda s: _c(s).update(privileged=True), "PSS-privileged", "privileged"),
    "added capability": (lambda s: _c(s)["capabilities"].update(add=["SYS_ADMIN"]),
                         "PSS-capabilities_restricted", "- SYS_ADMIN"),
    "hostPath volume": (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/etc"}}),
                        "PSS-restrictedVolumes", "hostPath"),
    "host port": (lambda s: s["containers"][0].update(ports=[{"containerPort": 8080, "hostPort": 8080}]),
                  "PSS-hostPorts", "hostPort"),
    "appArmorProfile field": (lambda s: _c(s).update(appArmorProfile={"type": "Unconfined"}),
                              "PSS-appArmorProfile", "type: Unconfined"),
    "SELinux type": (lambda s: _c(s).update(seLinuxOptions={"type": "spc_t"}), "PSS-seLinuxOptions", "type: spc_t"),
    "proc mount": (lambda s: _c(s).update(procMount="Unmasked"), "PSS-procMount", "procMount"),
    "seccomp Unconfined": (lambda s: _c(s).update(seccompProfile={"type": "Unconfined"}),
                           "PSS-seccompProfile_restricted", "type: Unconfined"),
    "unsafe sysctl": (lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
                      "PSS-sysctls", "name: kernel.msgmax"),
    "run as root": (lambda s: _c(s).update(runAsUser=0), "PSS-runAsUser", "runAsUser"),
    "HostProcess": (lambda s: _c(s).update(windowsOptions={"hostProcess": True}), "PSS-windowsHostProcess",
                    "hostProcess"),
}


def _lint(doc: dict[str, Any]) -> tuple[list[LintFinding], str]:
    text = yaml.safe_dump(doc, sort_keys=False)
    return k8s_rules(load_yaml_docs(text)[0], "m.yaml", committed=True), text


def test_the_clean_pod_has_no_finding() -> None:
    assert _lint(pod())[0] == []


@pytest.mark.parametrize("what", list(SINGLE))
def test_each_single_control_violation_blocks_at_its_line(what: str) -> None:
    mutate, rule, marker = SINGLE[what]
    spec = pod_spec()
    mutate(spec)
    found, text = _lint(pod(spec))
    assert [(f.rule, f.severity) for f in found] == [(rule, "HIGH")], found
    line = text.splitlines()[found[0].line - 1]
    assert marker in line, (line, found[0])
    assert found[0].fix and "v1.34: " in found[0].message   # the control's level, version and title


def _template(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": spec}


def _workloads(spec: dict[str, Any]) -> list[dict[str, Any]]:
    apps = [{"apiVersion": "apps/v1", "kind": k, "metadata": {"name": k.lower()},
             "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": _template(copy.deepcopy(spec))}}
            for k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")]
    return [*apps,
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job"},
             "spec": {"template": _template(copy.deepcopy(spec))}},
            {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cron"},
             "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": _template(copy.deepcopy(spec))}}}},
            pod(copy.deepcopy(spec), "bare"),
            {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "rollout"},
             "spec": {"template": _template(copy.deepcopy(spec))}}]


def _privileged_spec() -> dict[str, Any]:
    spec = pod_spec()
    _c(spec)["privileged"] = True
    spec["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    return spec


def _pss(found: list[LintFinding]) -> list[tuple[str, str]]:
    return sorted((f.message.split(":")[0], f.rule) for f in found if f.rule.startswith("PSS-"))


def test_every_workload_kind_and_every_list_item_is_checked() -> None:
    docs = _workloads(_privileged_spec())
    want = sorted((f"{d['kind']}/{d['metadata']['name']}", r) for d in docs
                  for r in ("PSS-privileged", "PSS-restrictedVolumes"))
    one_by_one = [f for d in docs for f in _lint(d)[0]]
    assert _pss(one_by_one) == want
    as_list = {"apiVersion": "v1", "kind": "List", "items": docs}
    assert _pss(_lint(as_list)[0]) == want
    typed = {"apiVersion": "apps/v1", "kind": "DeploymentList", "items": [docs[0]]}
    assert _pss(_lint(typed)[0]) == [("Deployment/deployment", "PSS-privileged"),
                                     ("Deployment/deployment", "PSS-restrictedVolumes")]


def test_rendered_helm_output_is_checked_list_items_too_and_points_at_the_template(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    body = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": _workloads(_privileged_spec())[:2]},
                          sort_keys=False)
    (chart / "templates" / "list.yaml").write_text(body)
    rendered = f"---\n# Source: chart/templates/list.yaml\n{body}"
    found = rendered_rule_findings([Rendered(chart, "values.yaml", "1.31.0", split_rendered(rendered, chart))])
    assert _pss(found) == [("Deployment/deployment", "PSS-privileged"),
                           ("Deployment/deployment", "PSS-restrictedVolumes"),
                           ("StatefulSet/statefulset", "PSS-privileged"),
                           ("StatefulSet/statefulset", "PSS-restrictedVolumes")]
    lines = body.splitlines()
    for f in (f for f in found if f.rule.startswith("PSS-")):
        assert f.file == str(chart / "templates" / "list.yaml") and f.severity == "HIGH"
        assert ("privileged" if f.rule == "PSS-privileged" else "hostPath") in lines[f.line - 1]


def test_vz_rules_keep_what_they_say_and_pss_adds_the_rest() -> None:
    spec = pod_spec()
    del _c(spec)["allowPrivilegeEscalation"]
    spec["securityContext"]["runAsNonRoot"] = False      # the pod says false: no container may be judged true
    _c(spec)["runAsNonRoot"] = True
    found, _ = _lint(pod(spec))
    assert sorted(f.rule for f in found) == ["PSS-runAsNonRoot", "VZ009"]
    assert "spec.securityContext.runAsNonRoot" in next(f.message for f in found if f.rule == "PSS-runAsNonRoot")


def test_a_kustomize_patch_gets_the_baseline_controls_on_what_it_sets() -> None:
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
             "spec": {"template": {"spec": {"containers": [{"name": "api", "securityContext": {"privileged": True}}]}}}}
    assert [f.rule for f in patch_rules(load_yaml_docs(yaml.safe_dump(patch))[0], "p.yaml")] == ["PSS-privileged"]
    del patch["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert patch_rules(load_yaml_docs(yaml.safe_dump(patch))[0], "p.yaml") == []   # no seccomp demanded of a patch


def test_trivys_check_of_the_same_control_folds_into_the_pss_finding() -> None:
    spec = pod_spec()
    _c(spec)["privileged"] = True
    (pss,), _ = _lint(pod(spec))
    trivy = LintFinding("KSV-0017", "HIGH", "m.yaml", 6, "should set 'securityContext.privileged' to false",
                        tool="trivy")
    (merged,) = merge_same_problem([pss, trivy], {("trivy", "m.yaml", 6): pss.line + 2})
    assert merged.rule == "PSS-privileged" and merged.seen_by == ("trivy KSV-0017",)
