"""The gate as users meet it: `invoke verify-images` and `invoke deploy` on a project whose image is not
trusted exit 3 with one line naming the image, and nothing reaches the cluster (no Helm release)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.stages.deploy import kube_target
from pipeline.tools import helm
from pipeline.trust import envkeys
from tests.integration.trust.trust_fixtures import TrustWorld

ROOT = Path(__file__).resolve().parents[3]


def _invoke(w: TrustWorld, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEZA_CONFIG": str(w.root / "pipeline.toml")}
    return subprocess.run([str(ROOT / ".venv" / "bin" / "invoke"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def chart_project(trust_world: TrustWorld) -> TrustWorld:
    """The project's chart; this one-service project switches the chart's other services off."""
    chart = trust_world.root / "helm" / "veza"
    shutil.copytree(ROOT / "helm" / "veza", chart)
    values = yaml.safe_load((chart / "values-dev.yaml").read_text())
    for name in values["services"]:
        if name != "veza-docs":
            values["services"][name]["enabled"] = False
    (chart / "values-dev.yaml").write_text(yaml.safe_dump(values))
    return trust_world


@pytest.mark.registry
def test_verify_images_task_renders_the_chart_and_exits_3_on_an_unsigned_image(chart_project: TrustWorld) -> None:
    w = chart_project
    digest = w.push()
    w.manifest(digest)
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    res = _invoke(w, "verify-images", "--env", "dev")
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"error: untrusted image {w.repository()}@{digest}: no signature" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.registry
def test_verify_images_task_passes_once_signed(chart_project: TrustWorld) -> None:
    w = chart_project
    digest = w.push()
    w.manifest(digest)
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    signed = _invoke(w, "sign", "--env", "dev")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    res = _invoke(w, "verify-images", "--env", "dev")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 image(s) signed and attested" in res.stdout + res.stderr


@pytest.mark.cluster
def test_deploy_of_an_unsigned_image_stops_before_helm_upgrade(chart_project: TrustWorld) -> None:
    w = chart_project
    digest = w.push()
    w.manifest(digest)
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    env = w.cfg.env("dev")
    res = _invoke(w, "deploy", "--env", "dev")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "untrusted image" in res.stderr and "Traceback" not in res.stderr
    assert helm.status(kube_target(env), env.helm_release) is None    # nothing was installed
