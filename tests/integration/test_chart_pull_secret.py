"""The chart references the environment's pull Secret through the values file the deploy generates: every pod
template gets `imagePullSecrets: [{name: registry-secret}]`, and nothing but the name (the credentials live in the
Secret the deploy applies). Without a pull Secret, the generated values leave the chart's own list alone."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.core.config import load_config
from pipeline.core.paths import ROOT
from pipeline.stages.deploy.values import image_values
from pipeline.tools import helm
from tests.integration.chart_fixtures import CHART, DIGESTS


def _pod_specs(generated: dict[str, object], tmp_path: Path) -> list[dict[str, object]]:
    values = tmp_path / "generated.json"
    values.write_text(json.dumps(generated))
    text = helm.template(CHART, "veza", [CHART / "values-dev.yaml", DIGESTS, values], namespace="veza-dev")
    docs = [d for d in yaml.safe_load_all(text) if d]
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def test_the_generated_values_make_every_pod_reference_the_pull_secret_by_name(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    with_secret = image_values(cfg, {}, "sha256:" + "1" * 64, "registry-secret")
    with_secret.pop("services")   # the chart's CI digests enable the services
    specs = _pod_specs(with_secret, tmp_path)
    assert specs and all(s.get("imagePullSecrets") == [{"name": "registry-secret"}] for s in specs)
    without = image_values(cfg, {}, "sha256:" + "1" * 64, "")
    without.pop("services")
    assert all("imagePullSecrets" not in s for s in _pod_specs(without, tmp_path))
