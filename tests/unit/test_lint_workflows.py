"""`invoke lint` audits GitHub Actions workflows with zizmor (offline): the repository's workflow has no finding
at MEDIUM or above, and a workflow with the classic faults is flagged, each at its line, and blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import PolicyBlocked
from pipeline.lint.run import gate, lint_paths

ROOT = Path(__file__).resolve().parents[2]

BAD = """\
name: bad
on: [push]
permissions:
  contents: read
  security-events: write
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.head_commit.message }}"
  test:
    runs-on: ubuntu-24.04
    steps:
      - run: echo test
"""


def test_the_repository_workflows_pass_zizmor_at_medium() -> None:
    report = lint_paths([ROOT / ".github" / "workflows"], "MEDIUM", ("1.31.0",))
    assert report.checked["workflows"] >= 1
    assert report.status == "pass", [f.to_dict() for f in report.blocking]
    gate(report)


def test_a_seeded_bad_workflow_is_flagged_at_its_lines(tmp_path: Path) -> None:
    wf = tmp_path / ".github" / "workflows" / "bad.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(BAD)
    report = lint_paths([tmp_path / ".github" / "workflows"], "MEDIUM", ("1.31.0",))
    got = {(f.rule, f.line) for f in report.findings if f.tool == "zizmor"}
    assert ("zizmor/unpinned-uses", 10) in got, got
    assert ("zizmor/artipacked", 10) in got, got
    assert ("zizmor/template-injection", 11) in got, got
    assert ("zizmor/excessive-permissions", 5) in got, got
    assert all(f.file == str(wf) and f.fix for f in report.findings), report.findings
    with pytest.raises(PolicyBlocked):
        gate(report)
