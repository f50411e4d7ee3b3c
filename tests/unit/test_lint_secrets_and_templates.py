"""Secrets judged by value and context; rendered chart lines mapped back to their template line."""

from __future__ import annotations

import pytest

from pipeline.lint.charts import template_line
from pipeline.lint.secrets import judge


@pytest.mark.parametrize(("name", "value"), [
    ("DATABASE_URL", "postgres://app:hunter2@db:5432/app"),     # by value, whatever the name
    ("SOME_SETTING", "ghp_" + "a" * 36),
    ("CERT", "-----BEGIN PRIVATE KEY-----\nMII..."),
    ("DB_PASSWORD", "hunter2"), ("apiToken", "abc"), ("SIGNING_KEY", "abc"),
])
def test_secrets(name: str, value: str) -> None:
    assert judge(name, value)


@pytest.mark.parametrize(("name", "value"), [
    ("TOKENIZERS_PARALLELISM", "false"), ("CACHE_URL", "redis://cache:6379/0"), ("SECRET_KEY_FILE", "/run/s/k"),
    ("DB_PASSWORD", "${DB_PASSWORD}"), ("DB_PASSWORD", ""), ("TOKEN_TTL", "3600"), ("KEYBOARD", "us"),
    ("SECRET_SCANNING", "true"), ("DATABASE_URL", "postgres://app:${DB_PASSWORD}@db/app"),
])
def test_not_secrets(name: str, value: str) -> None:
    assert judge(name, value) is None


TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        {{- range .Values.workers }}
        - name: {{ .name }}
          image: "{{ .image }}"
          resources:
            {{- toYaml .resources | nindent 12 }}
        {{- end }}
"""

RENDERED = """\
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        - name: a
          image: "a:1"
          resources:
            limits:
              memory: 1Gi
        - name: b
          image: "b:latest"
          resources:
            limits:
              memory: 1Gi
"""


def test_rendered_lines_map_to_the_template() -> None:
    assert template_line(TEMPLATE, RENDERED, 13) == 9      # the second worker's image: the one image line
    assert template_line(TEMPLATE, RENDERED, 16) == 10     # from toYaml: the nearest key above that maps
    assert template_line(TEMPLATE, RENDERED, 2) == 2


def test_config_text_is_judged_line_by_line() -> None:
    from pipeline.lint.secrets import judge_text

    text = ("# comment: password=not-this\n[db]\nhost = db\npassword = hunter2\npool_size = 10\n"
            "export API_TOKEN=abc123\nAPI_TOKEN_FILE=/run/secrets/t\nsecrets: []\nurl: postgres://u:p4ss@db/x\n")
    assert [i for i, _ in judge_text(text)] == [3, 5, 8]
