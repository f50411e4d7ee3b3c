"""`invoke lint --path` with the real hadolint, trivy, helm and schemas: a bad repository is blocked (exit 3)
with findings from every checker, its corrected twin passes, and the project's own files pass at prod's
threshold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import PolicyBlocked
from pipeline.lint.run import run_lint

BAD_DOCKERFILE = """\
FROM debian:bookworm
RUN apt-get update && apt-get install -y curl
ENV DB_PASSWORD=hunter2
CMD ["curl", "http://127.0.0.1/"]
"""

GOOD_DOCKERFILE = """\
FROM golang:1.22-bookworm AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -o /out/app .

FROM scratch
COPY --from=build /out/app /app
USER 10001
HEALTHCHECK CMD ["/app", "-healthcheck"]
ENTRYPOINT ["/app"]
"""

BAD_COMPOSE = """\
services:
  db:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD: postgres
"""

GOOD_COMPOSE = """\
services:
  db:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}
"""

GOOD_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: veza
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: api
          image: 127.0.0.1:5000/veza/api@sha256:0000000000000000000000000000000000000000000000000000000000000000
          env:
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef: {name: db, key: password}
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {cpu: 500m, memory: 128Mi}
          livenessProbe: {httpGet: {path: /health, port: 8080}}
          readinessProbe: {httpGet: {path: /ready, port: 8080}}
          securityContext:
            runAsNonRoot: true
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
"""

BAD_DEPLOYMENT = """\
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
          image: nginx:latest
          imagePullPolicy: Always
          ports: [{containerPort: 8080, protocl: TCP}]
          env:
            - name: API_TOKEN
              value: abc123
"""

BROKEN_CHART_TEMPLATE = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.missing.name }}\n"
CHART_YAML = "apiVersion: v2\nname: demo\nversion: 0.1.0\nicon: https://example.invalid/icon.png\n"


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def bad_repo(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "bad", {
        "Dockerfile": BAD_DOCKERFILE, "compose/docker-compose.yml": BAD_COMPOSE,
        "k8s/deploy.yaml": BAD_DEPLOYMENT, "charts/demo/Chart.yaml": CHART_YAML,
        "charts/demo/values.yaml": "{}\n", "charts/demo/templates/cm.yaml": BROKEN_CHART_TEMPLATE,
    })


@pytest.fixture
def good_repo(tmp_path: Path) -> Path:
    deployment_tpl = GOOD_DEPLOYMENT.replace("name: api\n  namespace: veza", "name: {{ .Release.Name }}-api\n"
                                             "  namespace: {{ .Release.Namespace }}")
    return write_tree(tmp_path / "good", {
        "Dockerfile": GOOD_DOCKERFILE, "compose/docker-compose.yml": GOOD_COMPOSE,
        "k8s/deploy.yaml": GOOD_DEPLOYMENT, "charts/demo/Chart.yaml": CHART_YAML,
        "charts/demo/values.yaml": "{}\n", "charts/demo/templates/deploy.yaml": deployment_tpl,
    })


def test_bad_repository_is_blocked_with_findings_from_every_checker(bad_repo: Path) -> None:
    with pytest.raises(PolicyBlocked) as exc:
        run_lint([str(bad_repo)], threshold="HIGH", fmt="text")
    assert exc.value.exit_code == 3
    # at CRITICAL only the literal secret in ENV still blocks: Trivy's DS-0031 rates it CRITICAL (one finding)
    with pytest.raises(PolicyBlocked, match="1 finding"):
        run_lint([str(bad_repo)], threshold="CRITICAL", fmt="text")


def test_json_format_names_rule_file_line_and_fix(bad_repo: Path, root: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "invoke", "lint", "--path", str(bad_repo), "--format", "json",
                          "--kube-version", "1.20", "--kube-version", "1.31"],
                         cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 3, res.stderr
    data = json.loads(res.stdout)
    assert data["status"] == "blocked" and data["threshold"] == "HIGH"
    dockerfile = str(bad_repo / "Dockerfile")
    got = {(f["rule"], f["line"]) for f in data["findings"] if f["file"] == dockerfile}
    assert {("VZ001", 1), ("VZ002", 1), ("VZ003", 3)} <= got          # our pitfalls
    assert any(r.startswith("DL") for r, _ in got)                      # hadolint
    assert ("DS-0029", 2) in got                                         # trivy config
    seen = {(f["rule"], f["line"]): set(f["seen_by"]) for f in data["findings"] if f["file"] == dockerfile}
    assert "trivy DS-0002" in seen[("VZ001", 1)] and "trivy DS-0031" in seen[("VZ003", 3)]   # one per problem
    compose = [f for f in data["findings"] if f["file"].endswith("docker-compose.yml")]
    assert [(f["rule"], f["line"], f["severity"]) for f in compose] == [("VZ003", 5, "HIGH")]
    deploy = {f["rule"] for f in data["findings"] if f["file"].endswith("k8s/deploy.yaml")}
    assert {"VZ003", "VZ004", "VZ005", "VZ006", "VZ007", "VZ008", "VZ009", "VZ010"} <= deploy
    schema = [f for f in data["findings"] if f["rule"] == "SCHEMA" and f["file"].endswith("deploy.yaml")]
    assert [(f["line"], "protocl" in f["message"]) for f in schema] == [(16, True)]   # one for both versions
    assert "1.20, 1.31" in schema[0]["message"]
    assert any(r.startswith("KSV") for r in deploy)                     # trivy's Kubernetes checks
    chart = {f["rule"] for f in data["findings"] if "charts/demo" in f["file"]}
    assert {"HELM-LINT", "HELM-TEMPLATE"} <= chart
    vz003 = next(f for f in data["findings"] if f["rule"] == "VZ003" and f["file"].endswith("deploy.yaml"))
    assert vz003["line"] == 19 and "secretKeyRef" in vz003["fix"] and vz003["name"] == "plaintext-secret"
    # Trivy alone says nothing about that literal API_TOKEN: only the pitfall rule catches it
    assert not [f for f in data["findings"] if f["tool"] == "trivy" and f["line"] in (18, 19)
                and f["file"].endswith("deploy.yaml")]
    assert all({"rule", "severity", "file", "line", "message", "fix", "tool"} <= set(f) for f in data["findings"])


def test_corrected_twin_passes(good_repo: Path) -> None:
    report = run_lint([str(good_repo)], threshold="HIGH", fmt="text")
    assert report.status == "pass", [f for f in report.blocking]
    assert report.checked["dockerfiles"] == 1 and report.checked["charts"] == 1
    assert report.checked["kubernetes_objects"] >= 2


def test_lint_single_files_and_missing_paths(good_repo: Path, bad_repo: Path) -> None:
    assert run_lint([str(good_repo / "Dockerfile")], fmt="text").status == "pass"
    with pytest.raises(PolicyBlocked):
        run_lint([str(bad_repo / "compose" / "docker-compose.yml")], fmt="text")
    from pipeline.core.errors import UsageError

    with pytest.raises(UsageError, match="no such file"):
        run_lint([str(good_repo / "nope")], fmt="text")
    with pytest.raises(UsageError, match="format"):
        run_lint([str(good_repo)], fmt="xml")


def test_project_files_pass_at_prod_threshold(root: Path) -> None:
    paths = [str(root / d) for d in ("dockerfiles", "compose", "k8s", "helm")]
    report = run_lint(paths, threshold=None, fmt="text")   # default: prod's threshold
    assert report.threshold == "HIGH"
    assert report.status == "pass", [f.to_dict() for f in report.blocking]
    assert report.checked["dockerfiles"] >= 4 and report.checked["charts"] >= 1
