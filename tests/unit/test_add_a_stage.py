"""Adding a stage is one module and one registry line: a stage defined under tests/ (hello_stage.py), one
entry in the registry, listed by an environment of a temporary config, runs through `invoke release` (the
real task, in a subprocess: invoke's Program spends the tasks' help texts as it parses), resumes after its
holds() and shows in the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.paths import ROOT

# The one registry line a new stage needs, then the real `invoke` entry point.
DRIVER = """
import sys
from pipeline.core.stage_registry import STAGE_REGISTRY, StageEntry
STAGE_REGISTRY["hello"] = StageEntry("tests.unit.hello_stage:HelloStage")
from invoke.main import program
program.run(["invoke", *sys.argv[1:]])
"""

CONFIG = """
[project]
name = "trial"

[registry]
address = "127.0.0.1:5000"
namespace = "trial"

[[services]]
name = "docs"
context = "docs"
dockerfile = "docs/Dockerfile"
port = 8083

[environments.trial]
namespace = "trial"
values_file = "values.yaml"
stages = ["hello"]
tags = ["sha"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "pipeline.toml").write_text(CONFIG)
    (tmp_path / ".gitignore").write_text(".pipeline/\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "feat: trial"], check=True)
    return tmp_path


def release(project: Path) -> tuple[dict[str, dict[str, object]], Manifest, str]:
    """`invoke release --env trial`; the run report's stages by name, the manifest and what it printed."""
    env = {k: v for k, v in os.environ.items() if k not in ("VEZA_STATE_DIR", "VEZA_RUN_ID", "VEZA_BRANCH", "CI")}
    done = subprocess.run([sys.executable, "-c", DRIVER, "release", "--env", "trial"], cwd=ROOT, text=True,
                          capture_output=True, timeout=120, env={**env, "VEZA_CONFIG": str(project / "pipeline.toml")})
    assert done.returncode == 0, done.stdout + done.stderr
    m = Manifest.load(manifest_path(project / ".pipeline", "trial"))
    report = json.loads((project / ".pipeline/trial/runs" / str(m.data["run_id"]) / "report.json").read_text())
    return {s["name"]: s for s in report["stages"]}, m, done.stdout + done.stderr


def test_a_stage_from_one_module_and_one_registry_line_runs_resumes_and_reports(project: Path) -> None:
    stages, m, _ = release(project)
    assert stages["hello"]["status"] == "ok" and stages["hello"]["detail"] == "greeted 1 service(s)"
    rec = m.stage("hello")
    assert rec is not None and rec.ok and rec.fields["greeted"] == ["docs"]
    greeting = project / ".pipeline/hello" / f"{m.release_id}.txt"
    assert greeting.read_text() == "hello docs"

    stages, _, out = release(project)           # the world still holds: resumed, not redone
    assert stages["hello"]["status"] == "resumed" and "ok, nothing to redo" in out

    greeting.unlink()                           # the world changed: holds() says why, the stage runs again
    stages, _, out = release(project)
    assert stages["hello"]["status"] == "ok" and "hello: the greeting is gone; greeting again" in out
    assert greeting.is_file()
