"""The lint corpus (tests/corpus/lint): real-world-shaped inputs for each kind of fault issue 17 found, linted
with the real BuildKit parser, hadolint, trivy, helm and schemas; every blocking finding asserted exactly
(rule, file, line), and so is the absence of findings where the inputs are right."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import PolicyBlocked, UsageError
from pipeline.lint.run import LintReport, gate, lint_paths

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "lint"
KINDS = ("dockerfiles", "compose", "manifests", "kustomize", "charts")

EXPECTED_BLOCKING = {
    # 1. BuildKit's parser and Dockerfile semantics
    ("VZ001", "dockerfiles/heredoc-hides-root.Dockerfile", 7),      # `user nginx;` in a heredoc hides nothing
    ("VZ001", "dockerfiles/official-base-no-user.Dockerfile", 1),   # "no USER in this file"
    ("VZ001", "dockerfiles/scratch-no-user.Dockerfile", 3),
    ("VZ001", "dockerfiles/continuation-swallows-user.Dockerfile", 1),   # the blank line does not end the RUN
    ("DOCKERFILE", "dockerfiles/unterminated-heredoc.Dockerfile", 0),
    ("VZ001", "dockerfiles/arg-unscoped-user.Dockerfile", 4),        # ARG APP_UID brings the global 0 in
    # 5. secrets by value and context
    ("VZ003", "dockerfiles/escape-directive.Dockerfile", 3),        # `# escape=` continuation, API_TOKEN
    ("VZ003", "dockerfiles/secrets-by-value.Dockerfile", 2),        # DATABASE_URL with a password
    ("VZ003", "dockerfiles/secrets-by-value.Dockerfile", 8),        # a token URL inside a RUN heredoc
    ("VZ003", "dockerfiles/heredoc-config-secret.Dockerfile", 5),   # `password = …` in an INI file written inline
    ("VZ003", "compose/docker-compose.yml", 5),                     # only DATABASE_URL of six variables
    ("VZ003", "manifests/malformed-and-next.yaml", 17),
    ("VZ003", "manifests/malformed-and-next.yaml", 18),
    ("VZ003", "manifests/list-and-secret.yaml", 9),                 # a committed Secret, inside a List
    ("VZ003", "manifests/configmap-files.yaml", 10),                # one line of a properties file
    ("VZ003", "kustomize/overlay/kustomization.yaml", 13),          # configMapGenerator literal
    # 3. other shapes: List items, Kustomize patches (only what they set)
    ("VZ005", "manifests/list-and-secret.yaml", 21),
    ("VZ005", "kustomize/overlay/unsafe.yaml", 10),
    ("VZ009", "kustomize/overlay/unsafe.yaml", 12),
    # 4. a malformed object is one finding (schema and trivy fold into it), the next object is still linted
    ("MALFORMED", "manifests/malformed-and-next.yaml", 9),
    ("MALFORMED", "manifests/malformed-siblings.yaml", 13),         # env: a string
    ("MALFORMED", "manifests/malformed-siblings.yaml", 25),         # capabilities.drop: a string
    # 6. chart findings at the template's line
    ("VZ005", "charts/shop/templates/deployment.yaml", 22),
    ("VZ008", "charts/shop/templates/deployment.yaml", 31),
    ("HELM-DEPENDENCY", "charts/needs-remote-dep/Chart.yaml", 0),    # one finding, not one per helm call
    # 7. what the Pod Security Standards forbid, in a typed List's items (trivy config sees none of it)
    ("PSS-privileged", "manifests/pod-security-list.yaml", 27),
    ("PSS-restrictedVolumes", "manifests/pod-security-list.yaml", 35),   # hostPath
    ("PSS-hostNamespaces", "manifests/pod-security-list.yaml", 44),
    ("PSS-sysctls", "manifests/pod-security-list.yaml", 49),
}


def rel(f: str) -> str:
    return str(Path(f).resolve().relative_to(CORPUS))


@pytest.fixture(scope="module")
def report() -> LintReport:
    return lint_paths([CORPUS / k for k in KINDS], "HIGH", ("1.20.0", "1.31.0"))


def test_blocking_findings_exactly(report: LintReport) -> None:
    assert {(f.rule, rel(f.file), f.line) for f in report.blocking} == EXPECTED_BLOCKING
    with pytest.raises(PolicyBlocked):
        gate(report)


@pytest.mark.parametrize("clean", [
    "dockerfiles/heredoc-python.Dockerfile",       # a `from` line in a heredoc is no FROM
    "dockerfiles/stage-inherits-user.Dockerfile",  # FROM runtime inherits USER 10001
    "dockerfiles/arg-scoped-user.Dockerfile",      # lower-case instructions, ARG scoping, ONBUILD USER root
    "dockerfiles/distroless-nonroot.Dockerfile",   # the base's tag says its default user is nonroot
    "manifests/good-deployment.yaml",              # null annotations/envFrom, cpu: 0.5, TOKENIZERS_*
    "kustomize/base/deployment.yaml",
    "kustomize/overlay/add-env.yaml",              # a patch that adds one env var
    "charts/common/Chart.yaml",                    # a library chart
    "charts/shop-monorepo/Chart.yaml",             # uses the library chart beside it (file://), not vendored
])
def test_right_inputs_have_no_blocking_finding(report: LintReport, clean: str) -> None:
    prefix = str(Path(clean).parent) + "/" if clean.endswith("Chart.yaml") else clean
    assert [f for f in report.blocking if rel(f.file.split(" [")[0]).startswith(prefix)] == []


def test_one_finding_per_problem_with_every_tool(report: LintReport) -> None:
    by_key = {(f.rule, rel(f.file), f.line): f for f in report.findings}
    assert "trivy DS-0002" in by_key[("VZ001", "dockerfiles/scratch-no-user.Dockerfile", 3)].seen_by
    assert {"hadolint DL3064", "trivy DS-0031"} <= set(
        by_key[("VZ003", "dockerfiles/escape-directive.Dockerfile", 3)].seen_by)
    malformed = by_key[("MALFORMED", "manifests/malformed-and-next.yaml", 9)]
    assert "kubernetes-validate SCHEMA" in malformed.seen_by
    assert "trivy KSV-0014" in by_key[("VZ008", "charts/shop/templates/deployment.yaml", 31)].seen_by
    # the name-only secret checks never stand alone: SECRET_KEY_FILE and an ARG without value are no secrets
    assert not [f for f in report.findings if f.rule in ("DS-0031", "DL3064", "DS-0002")]
    # hadolint's parser lacks heredocs: it is given the file with stand-ins, so its checks still run there
    assert "hadolint DL3002" in by_key[("VZ001", "dockerfiles/heredoc-hides-root.Dockerfile", 7)].seen_by
    assert not [f for f in report.findings if f.rule in ("DL1000", "HADOLINT-PARSE", "HELM-LINT", "HELM-TEMPLATE",
                                                          "SCHEMA")]


def test_a_path_with_nothing_recognised_fails() -> None:
    report = lint_paths([CORPUS / "empty"], "HIGH", ("1.31.0",))
    assert report.findings == () and report.unrecognised == (str(CORPUS / "empty"),)
    with pytest.raises(UsageError, match="nothing recognised"):
        gate(report)
