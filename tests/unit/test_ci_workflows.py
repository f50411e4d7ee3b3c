"""The CI definitions are valid for their platforms (published schemas, vendored by check-jsonschema)
and call only invoke targets that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(sys.executable).parent / "check-jsonschema"
FILES = [(".github/workflows/release.yml", "vendor.github-workflows"), (".gitlab-ci.yml", "vendor.gitlab-ci")]


def _validate(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK), "--builtin-schema", schema, str(path)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize(("rel", "schema"), FILES)
def test_ci_file_valid_against_published_schema(rel: str, schema: str) -> None:
    cp = _validate(ROOT / rel, schema)
    assert cp.returncode == 0, cp.stdout + cp.stderr


@pytest.mark.parametrize(("rel", "schema"), FILES)
def test_schema_check_rejects_a_broken_twin(rel: str, schema: str, tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / rel).read_text())
    if "jobs" in data:
        data["jobs"]["lint"]["runs-on"] = {"bogus": True}
        data["jobs"]["lint"]["steps"] = "not a list"
    else:
        data["lint"]["stage"] = ["not", "a", "string"]
        data["lint"]["script"] = {"bogus": 1}
    broken = tmp_path / Path(rel).name
    broken.write_text(yaml.safe_dump(data))
    assert _validate(broken, schema).returncode != 0


def test_ci_calls_only_existing_invoke_targets() -> None:
    listed = subprocess.run([str(Path(sys.executable).parent / "invoke"), "--list"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True).stdout
    tasks = {ln.split()[0] for ln in listed.splitlines()[1:] if ln.strip()}
    used = set()
    for rel, _ in FILES:
        used |= set(re.findall(r"\.venv/bin/invoke ([a-z][a-z-]+)", (ROOT / rel).read_text()))
    assert used and used <= tasks, used - tasks
    assert {"lint", "build", "scan", "smoke", "push", "release"} <= used


@pytest.mark.parametrize(("job", "env", "secret"), [("deploy-dev", "dev", "DEV_KUBECONFIG"),
                                                    ("release-prod", "prod", "PROD_KUBECONFIG")])
def test_ci_deploys_reach_an_external_cluster_through_the_variable_pipeline_toml_names(
        job: str, env: str, secret: str) -> None:
    """The kubeconfig comes from the secret store into the file whose path pipeline.toml's kubeconfig_env names,
    before any release step; an absent secret stops the job instead of falling back to a cluster of its own."""
    from pipeline.core.config import load_config

    var = load_config(ROOT / "pipeline.toml", check_files=False).env(env).kubeconfig_env
    assert var
    steps = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())["jobs"][job]["steps"]
    runs = [str(s.get("run", "")) for s in steps]
    writes = [i for i, s in enumerate(steps) if f"secrets.{secret}" in str(s.get("env", {}))
              and f'echo "{var}=' in runs[i] and "exit 2" in runs[i]]
    releases = [i for i, r in enumerate(runs) if f"invoke release --env {env}" in r]
    assert writes and releases and writes[0] < min(releases), (writes, releases)
    assert not any("KUBECONFIG=" in r and var not in r for r in runs)
    script = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())[job]["script"]
    exports = [i for i, ln in enumerate(script) if ln.startswith(f"export {var}=")]
    gl_releases = [i for i, ln in enumerate(script) if f"invoke release --env {env}" in ln]
    assert exports and gl_releases and exports[0] < min(gl_releases), script
    assert any(f'test -n "${secret}"' in ln and "exit 2" in ln for ln in script[:exports[0]])
