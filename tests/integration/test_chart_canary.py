"""The chart's canary Deployment (services.<name>.canary), rendered by the real Helm binaries, no cluster: the new
version beside the stable one under the same Service, its own track in its selector, the stable Deployment
exactly as it renders without a canary, restricted pods, schema-valid; a canary of a persisted service or
without an image is one clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.errors import StageFailed
from pipeline.core.paths import TOOLS_BIN
from pipeline.gate.pod_security import enforce_restricted
from pipeline.tools import helm
from tests.integration.chart_fixtures import ENVS, render, validate

HELMS = {"helm3": TOOLS_BIN / "helm", "helm4": TOOLS_BIN / "helm4"}
NEW = "sha256:" + "1" * 64


@pytest.fixture(params=sorted(HELMS), autouse=True)
def which_helm(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(helm.HELM_ENV, str(HELMS[request.param]))
    yield request.param


def _canary_values(tmp: Path, service: str, body: dict[str, Any]) -> Path:
    path = tmp / "canary.yaml"
    path.write_text(yaml.safe_dump({"services": {service: {"canary": body}}}))
    return path


def _by_name(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("env", ENVS)
def test_the_canary_runs_beside_the_stable_version_under_the_same_service(env: str, tmp_path: Path) -> None:
    plain = render(env, "1.20.0")
    extra = _canary_values(tmp_path, "veza-docs", {"enabled": True, "replicas": 1, "image": {
        "repository": "127.0.0.1:5000/veza/veza-docs", "digest": NEW}})
    docs = render(env, "1.20.0", extra)
    deps, plain_deps = _by_name(docs, "Deployment"), _by_name(plain, "Deployment")
    assert set(deps) == set(plain_deps) | {"veza-docs-canary"}
    assert all(deps[n] == plain_deps[n] for n in plain_deps)    # every stable Deployment exactly as without it
    canary, stable = deps["veza-docs-canary"], deps["veza-docs"]
    assert canary["spec"]["replicas"] == 1
    pod = canary["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == f"127.0.0.1:5000/veza/veza-docs@{NEW}"
    assert pod["metadata"]["labels"]["veza.io/track"] == "canary"
    assert stable["spec"]["template"]["metadata"]["labels"]["veza.io/track"] == "stable"
    assert canary["spec"]["selector"]["matchLabels"] == {**stable["spec"]["selector"]["matchLabels"],
                                                         "veza.io/track": "canary"}
    # the one Service selects the pods of both (the replica ratio is the weight); scraped by the same annotations
    service = _by_name(docs, "Service")["veza-docs"]
    for dep in (stable, canary):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
        assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert enforce_restricted(yaml.safe_dump_all(docs)) == len(deps)
    for version in ("1.20.0", "1.31.0"):
        validate(canary, version)


def test_a_canary_at_zero_replicas_stays_at_zero(tmp_path: Path) -> None:
    extra = _canary_values(tmp_path, "veza-docs", {"enabled": True, "replicas": 0, "image": {
        "repository": "127.0.0.1:5000/veza/veza-docs", "digest": NEW}})
    assert _by_name(render("local", "1.20.0", extra), "Deployment")["veza-docs-canary"]["spec"]["replicas"] == 0


@pytest.mark.parametrize(("service", "body", "needle"), [
    ("veza-stream-server", {"enabled": True, "image": {"repository": "r", "digest": NEW}}, "persistent volume"),
    ("veza-docs", {"enabled": True}, "services.veza-docs.canary.image is not set"),
    ("veza-docs", {"enabled": True, "image": {"repository": "r", "tag": "v2"}}, "a tag alone"),
])
def test_a_canary_that_cannot_run_is_one_clear_error(service: str, body: dict[str, Any], needle: str,
                                                     tmp_path: Path) -> None:
    with pytest.raises(StageFailed) as err:
        render("prod", "1.20.0", _canary_values(tmp_path, service, body))
    assert needle in err.value.message, err.value.message
