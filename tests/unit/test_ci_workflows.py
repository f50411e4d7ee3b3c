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
