"""Kubernetes and compose pitfalls: each rule fires on a minimal bad example and is silent on its twin."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from pipeline.lint.rules import compose_rules, k8s_rules, load_yaml_docs

GOOD = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      securityContext:
        runAsNonRoot: true
      containers:
        - name: api
          image: 127.0.0.1:5000/veza/api@sha256:0000000000000000000000000000000000000000000000000000000000000000
          env:
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef: {name: db, key: password}
            - name: LOG_LEVEL
              value: info
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {memory: 128Mi}
          livenessProbe: {httpGet: {path: /health, port: 8080}}
          readinessProbe: {httpGet: {path: /ready, port: 8080}}
          securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
"""


def good() -> dict[str, Any]:
    return yaml.safe_load(GOOD)  # type: ignore[no-any-return]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def rules_of(doc: Any) -> set[str]:
    return {f.rule for f in k8s_rules(doc, "m.yaml")}


def test_corrected_deployment_is_silent() -> None:
    assert rules_of(load_yaml_docs(GOOD)[0]) == set()


def test_findings_carry_file_line_and_fix() -> None:
    text = GOOD.replace("              value: info", "              value: info\n"
                        "            - name: API_TOKEN\n              value: abc123")
    (f,) = k8s_rules(load_yaml_docs(text)[0], "m.yaml")
    assert (f.rule, f.file, f.line, f.severity) == ("VZ003", "m.yaml", 24, "HIGH")
    assert "secretKeyRef" in f.fix and "API_TOKEN" in f.message


def mutate(path: str, value: Any = None, delete: bool = False) -> dict[str, Any]:
    doc = copy.deepcopy(good())
    obj: Any = doc
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[int(k)] if k.isdigit() else obj[k]
    if delete:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value
    return doc


C = "spec.template.spec.containers.0"


@pytest.mark.parametrize(("rule", "doc"), [
    ("VZ003", mutate(f"{C}.env", [{"name": "DB_PASSWORD", "value": "hunter2"}])),
    ("VZ004", mutate(f"{C}.resources", delete=True)),
    ("VZ004", mutate(f"{C}.resources", {"requests": {"cpu": "1"}})),
    ("VZ005", mutate(f"{C}.image", "127.0.0.1:5000/veza/api:latest")),
    ("VZ005", mutate(f"{C}.image", "nginx")),
    ("VZ006", mutate(f"{C}.livenessProbe", delete=True)),
    ("VZ006", mutate(f"{C}.readinessProbe", delete=True)),
    ("VZ007", mutate("spec.template.spec.securityContext", delete=True)),
    ("VZ007", mutate(f"{C}.securityContext.runAsNonRoot", False)),
    ("VZ008", mutate(f"{C}.securityContext.readOnlyRootFilesystem", delete=True)),
    ("VZ009", mutate(f"{C}.securityContext.allowPrivilegeEscalation", True)),
    ("VZ010", mutate(f"{C}.securityContext.capabilities", {"drop": ["NET_RAW"]})),
    ("VZ010", mutate(f"{C}.securityContext.capabilities", delete=True)),
])
def test_each_rule_fires_on_its_bad_example(rule: str, doc: dict[str, Any]) -> None:
    assert rules_of(doc) == {rule}


@pytest.mark.parametrize("doc", [
    mutate(f"{C}.image", "127.0.0.1:5000/veza/api:1.4.2"),                 # VZ005 twin: a version tag
    mutate(f"{C}.env", [{"name": "DB_PASSWORD_FILE", "value": "/run/secrets/db"}]),   # VZ003 twin
    mutate(f"{C}.securityContext.runAsNonRoot", True),                     # VZ007 twin at container level
])
def test_twins_are_silent(doc: dict[str, Any]) -> None:
    assert rules_of(doc) == set()


def test_jobs_need_no_probes_and_cronjobs_are_checked() -> None:
    job = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "j"},
           "spec": {"jobTemplate": {"spec": {"template": {"spec": copy.deepcopy(good()["spec"]["template"]["spec"])}}}}}
    cont = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    del cont["livenessProbe"], cont["readinessProbe"]
    assert rules_of(job) == set()
    cont["image"] = "busybox"
    assert rules_of(job) == {"VZ005"}


def test_configmap_with_a_password_is_a_plaintext_secret() -> None:
    cm = load_yaml_docs("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  LOG: info\n"
                        "  DB_PASSWORD: hunter2\n")[0]
    (f,) = k8s_rules(cm, "c.yaml")
    assert (f.rule, f.line) == ("VZ003", 6)
    assert rules_of(load_yaml_docs("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {LOG: info}\n")[0]) \
        == set()


def test_non_workloads_are_ignored() -> None:
    assert rules_of({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}) == set()
    assert rules_of({"not": "k8s"}) == set()


COMPOSE_BAD = """\
x-env: &env
  SHARED_TOKEN: abc
services:
  db:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD: postgres
      POSTGRES_USER: veza
  api:
    image: api
    environment:
      - API_KEY=abc123
      - DEBUG=1
  worker:
    image: w
    environment:
      <<: *env
      REDIS_PASSWORD: ${REDIS_PASSWORD:-changeme}
"""

COMPOSE_GOOD = """\
services:
  db:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}
      POSTGRES_PASSWORD_FILE: /run/secrets/pg
  api:
    image: api
    environment:
      - API_KEY=${API_KEY}
      - API_KEY_FILE=/run/secrets/api
      - DEBUG=1
"""


def test_compose_plaintext_secrets_with_lines() -> None:
    (doc,) = load_yaml_docs(COMPOSE_BAD)
    got = sorted((f.rule, f.line) for f in compose_rules(doc, "compose.yml"))
    assert got == [("VZ003", 2), ("VZ003", 7), ("VZ003", 12), ("VZ003", 18)]


def test_compose_twin_is_silent() -> None:
    (doc,) = load_yaml_docs(COMPOSE_GOOD)
    assert compose_rules(doc, "compose.yml") == []


def _every_node_replaced(doc: Any) -> Any:
    """Copies of doc with one node at a time replaced by a value of the wrong type."""
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        paths.append(path)
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for k, v in items:
            walk(v, [*path, k])

    walk(doc, [])
    for path in paths[1:]:
        for wrong in ("runAsNonRoot", 7, ["x"], None, {"a": 1}):
            d = copy.deepcopy(doc)
            node = d
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = wrong
            yield d


def test_no_shape_crashes_the_rules() -> None:
    """Every field of the good Deployment given a wrong type: the rules return findings, never raise."""
    count = 0
    for d in _every_node_replaced(good()):
        k8s_rules(d, "m.yaml")
        k8s_rules(d, "m.yaml", patch=True)
        count += 1
    assert count > 100


def test_a_string_security_context_is_one_malformed_finding() -> None:
    block = GOOD[GOOD.index("          securityContext:\n            readOnly"):]
    doc = load_yaml_docs(GOOD.replace(block, '          securityContext: "runAsNonRoot"\n'))[0]
    (f,) = k8s_rules(doc, "m.yaml")
    assert (f.rule, f.line) == ("MALFORMED", 28) and "securityContext is not a map" in f.message


def test_custom_workloads_and_ephemeral_containers() -> None:
    rollout = copy.deepcopy(good())
    rollout["apiVersion"], rollout["kind"] = "argoproj.io/v1alpha1", "Rollout"
    assert rules_of(rollout) == set()
    del container(rollout)["readinessProbe"]
    assert rules_of(rollout) == {"VZ006"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [],
                    "ephemeralContainers": [{"name": "debug", "image": "busybox:1.36", "securityContext": {
                        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]}}}]}}
    assert rules_of(pod) == set()          # no resources, no probes: ephemeral containers may set neither
    pod["spec"]["ephemeralContainers"][0]["image"] = "busybox"
    assert rules_of(pod) == {"VZ005"}


def test_patch_is_judged_on_what_it_sets() -> None:
    from pipeline.lint.rules import patch_rules

    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
             "spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "A", "value": "1"}]}]}}}}
    assert patch_rules(patch, "p.yaml") == []
    patch["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": True}
    assert [f.rule for f in patch_rules(patch, "p.yaml")] == ["VZ009"]
