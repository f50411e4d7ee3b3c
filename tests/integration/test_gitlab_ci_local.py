"""The pinned gitlab-ci-local as ci-local drives it (tools/gitlab_ci_local), on a one-job repository: a job gets a
plain variable and a secret File variable, never sees our environment, the secret is on no output line and no argv,
and the File variable's copy the tool writes under /tmp is gone afterwards."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.tools import gitlab_ci_local
from pipeline.tools.gitlab_ci_local import Secret

JOB = """job:
  script:
    - test "$PLAIN" = plain-value
    - test -f "$KUBE" && grep -q kind-of-config "$KUBE"
    - test -z "${OURS_ONLY:-}"
    - echo "kube is $(cat "$KUBE")"
"""


def test_a_job_gets_exactly_its_variables_and_the_file_secret_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    (repo / ".gitlab-ci.yml").write_text(JOB)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.invalid"],
                 ["config", "user.name", "t"], ["add", "-A"], ["commit", "-qm", "one job"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, timeout=30)
    monkeypatch.setenv("OURS_ONLY", "must-not-reach-the-job")
    before = set(Path("/tmp").glob("gitlab-ci-local-file-variables-*"))
    lines: list[str] = []
    secret = "kind-of-config s3cr3t-" + os.urandom(4).hex()
    rc = gitlab_ci_local.run_pipeline(repo, Path(".gitlab-ci.yml"), variables={"PLAIN": "plain-value"},
                                      secrets={"KUBE": Secret(secret, file=True)}, on_line=lines.append,
                                      timeout=300)
    out = "\n".join(lines)
    assert rc == 0, out[-3000:]
    assert "kube is" in out and secret not in out
    assert set(Path("/tmp").glob("gitlab-ci-local-file-variables-*")) == before
