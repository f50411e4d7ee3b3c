"""hadolint and `trivy config` on the service Dockerfiles and the base recipes: no HIGH/CRITICAL left,
and the only accepted findings are the ones justified in the recipes' ignore files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.tools import proc

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "pipeline" / "local" / "recipes"


def _trivy(target: Path, *extra: str) -> list[dict[str, object]]:
    res = proc.run([proc.find_tool("trivy"), "config", "--skip-check-update", "--skip-version-check",
                    "--disable-telemetry", "--quiet", "--format", "json", *extra, str(target)], timeout=300)
    report = json.loads(res.stdout)
    return [m for r in report.get("Results") or [] for m in r.get("Misconfigurations") or []
            if m.get("Status") == "FAIL"]


def test_hadolint_clean_on_service_dockerfiles() -> None:
    files = sorted((ROOT / "dockerfiles").glob("*.Dockerfile"))
    assert len(files) == 4
    res = proc.run([proc.find_tool("hadolint"), "--no-color", *map(str, files)], timeout=120, check=False)
    assert res.ok and not res.stdout.strip(), res.stdout


def test_hadolint_recipes_only_the_justified_rule() -> None:
    files = sorted(map(str, RECIPES.glob("*/Dockerfile")))
    cfg = RECIPES / ".hadolint.yaml"
    assert proc.run([proc.find_tool("hadolint"), "--no-color", "--config", str(cfg), *files],
                    timeout=120, check=False).ok
    # Without the config, DL3008 is the only finding: the ignore file hides nothing else.
    bare = proc.run([proc.find_tool("hadolint"), "--no-color", "--config", "/dev/null", *files],
                    timeout=120, check=False)
    rules = {ln.split()[1] for ln in bare.stdout.splitlines() if ln.strip()}
    assert rules <= {"DL3008"}, bare.stdout


@pytest.mark.slow
def test_trivy_config_no_findings_on_service_dockerfiles() -> None:
    assert _trivy(ROOT / "dockerfiles") == []


@pytest.mark.slow
def test_trivy_config_recipes_clean_with_justified_ignores() -> None:
    assert _trivy(RECIPES, "--ignorefile", str(RECIPES / ".trivyignore.yaml")) == []
    raw = _trivy(RECIPES)
    high = {m["ID"] for m in raw if m.get("Severity") in ("HIGH", "CRITICAL")}
    assert high == {"DS-0002"}, high        # root builders only, justified in .trivyignore.yaml
