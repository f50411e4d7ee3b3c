"""Schema validation (current Kubernetes, schemas shipped by kubernetes-validate) and its line mapping."""

from __future__ import annotations

from pipeline.lint.external import line_of
from pipeline.lint.k8s_schema import Violation, validate
from pipeline.lint.rules import load_yaml_docs

DOC = """\
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
      containers:
        - name: api
          image: api:1.0
          ports:
            - containerPort: 8080
              protocl: TCP
"""


def test_unknown_field_is_a_violation_with_its_path_and_line() -> None:
    (doc,) = load_yaml_docs(DOC)
    (v,) = validate(doc, "1.31.0")
    assert v.path == ("spec", "template", "spec", "containers", 0, "ports", 0) and "protocl" in v.message
    assert line_of(doc, v.path) == 16


def test_valid_object_and_corrected_twin() -> None:
    (doc,) = load_yaml_docs(DOC.replace("protocl", "protocol"))
    assert validate(doc, "1.31.0") == []


def test_api_not_served_and_custom_resources() -> None:
    pdb = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
           "spec": {"minAvailable": 1}}
    assert validate(pdb, "1.31.0") == [Violation((), "Kubernetes 1.31.0 does not serve PodDisruptionBudget in "
                                                     "policy/v1beta1")]
    crd = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"}}
    assert validate(crd, "1.31.0") == []   # not a Kubernetes API group: no schema, no verdict
