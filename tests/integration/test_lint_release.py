"""The lint stage body with the real checkers: the project passes at prod's threshold; a copy of it with a
root Dockerfile is blocked (exit 3); the Kubernetes versions come from the cluster or the config."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import PolicyBlocked
from pipeline.core.reporter import PlainReporter
from pipeline.lint.release import kube_versions_for, lint_release
from pipeline.stages.lint import inputs_fingerprint

ROOT = Path(__file__).resolve().parents[2]


def test_kube_versions_from_config_when_no_cluster_answers() -> None:
    env = load_config(check_files=False).environments["prod"]
    nowhere = dataclasses.replace(env, kube_context="veza-no-such-context", kube_versions=("1.29", "v1.31.2"))
    assert kube_versions_for(nowhere) == ("1.29.0", "1.31.0")
    assert kube_versions_for(dataclasses.replace(nowhere, kube_versions=())) == ("1.20.0", "1.31.0")


def test_lint_release_blocks_at_the_environment_threshold(tmp_path: Path) -> None:
    cfg = load_config(check_files=False)
    env = dataclasses.replace(cfg.environments["prod"], kube_context="veza-no-such-context", kube_versions=("1.31",))
    for d in ("dockerfiles", "k8s"):
        shutil.copytree(ROOT / d, tmp_path / d)
    project = dataclasses.replace(cfg, root=tmp_path)
    result = lint_release(project, env, PlainReporter())
    assert result.status == "pass" and result.kube_versions == ("1.31.0",)
    before = inputs_fingerprint(tmp_path, env.scan_threshold, result.kube_versions)
    (tmp_path / "dockerfiles" / "extra.Dockerfile").write_text("FROM debian:bookworm-slim\nUSER root\n")
    assert inputs_fingerprint(tmp_path, env.scan_threshold, result.kube_versions) != before
    with pytest.raises(PolicyBlocked) as exc:
        lint_release(project, env, PlainReporter())
    assert exc.value.exit_code == 3
