"""The chart's blue-green colours (services.<name>.blueGreen), rendered by the real Helm binaries, no cluster: blue is
the service's own Deployment, exactly as it renders without blue-green but for two metadata labels; green is
<name>-green with its own track in its selector; the main Service selects the active colour's track and
<name>-preview the other's; a switch changes the Services' selectors and no colour's pod template; restricted pods,
schema-valid; two colours of a persisted service, or beside a canary, or without a standby image, are one clear
error."""

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
REPO = "127.0.0.1:5000/veza/veza-docs"


@pytest.fixture(params=sorted(HELMS), autouse=True)
def which_helm(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(helm.HELM_ENV, str(HELMS[request.param]))
    yield request.param


def _values(tmp: Path, service: str, body: dict[str, Any], name: str = "bg.yaml", **svc: Any) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump({"services": {service: {"blueGreen": body, **svc}}}))
    return path


def _by_name(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _image(ref: str) -> dict[str, str]:
    repo, _, digest = ref.partition("@")
    return {"repository": repo, "digest": digest}


@pytest.mark.parametrize("env", ENVS)
def test_the_new_colour_runs_beside_the_active_one_behind_its_preview_service(env: str, tmp_path: Path) -> None:
    plain = render(env, "1.20.0")
    preview = render(env, "1.20.0", _values(tmp_path, "veza-docs", {
        "enabled": True, "active": "blue", "standby": {"replicas": 1, "image": {"repository": REPO, "digest": NEW}}}))
    deps, plain_deps = _by_name(preview, "Deployment"), _by_name(plain, "Deployment")
    assert set(deps) == set(plain_deps) | {"veza-docs-green"}
    assert all(deps[n] == plain_deps[n] for n in plain_deps if n != "veza-docs")
    blue, green = deps["veza-docs"], deps["veza-docs-green"]
    # blue is the Deployment that served before: the same spec (pods, selector, replicas), two labels more
    assert blue["spec"] == plain_deps["veza-docs"]["spec"]
    assert blue["metadata"]["labels"] == {**plain_deps["veza-docs"]["metadata"]["labels"], "veza.io/colour": "blue",
                                          "veza.io/role": "active"}
    assert green["metadata"]["labels"]["veza.io/role"] == "standby"
    assert green["spec"]["replicas"] == 1
    assert green["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPO}@{NEW}"
    assert green["spec"]["template"]["metadata"]["labels"]["veza.io/track"] == "green"
    assert green["spec"]["selector"]["matchLabels"] == {**blue["spec"]["selector"]["matchLabels"],
                                                        "veza.io/track": "green"}
    services = _by_name(preview, "Service")
    assert set(services) == set(_by_name(plain, "Service")) | {"veza-docs-preview"}
    main, prev = services["veza-docs"], services["veza-docs-preview"]
    assert main["spec"]["selector"]["veza.io/track"] == "stable"
    assert prev["spec"]["selector"]["veza.io/track"] == "green"
    assert prev["spec"]["type"] == "ClusterIP" and prev["spec"]["ports"] == main["spec"]["ports"]
    for service, dep in ((main, blue), (prev, green)):   # each Service selects its colour's pods, not the other's
        labels = dep["spec"]["template"]["metadata"]["labels"]
        other = (green if dep is blue else blue)["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
        assert not all(other.get(k) == v for k, v in service["spec"]["selector"].items())
        assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert enforce_restricted(yaml.safe_dump_all(preview)) == len(deps)
    for version in ("1.20.0", "1.31.0"):
        for doc in (green, prev, main):
            validate(doc, version)


def test_a_switch_moves_the_services_selectors_and_no_pod_template(tmp_path: Path) -> None:
    old = _by_name(render("local", "1.20.0"), "Deployment")["veza-docs"]["spec"]["template"]["spec"]["containers"][0]
    old_image = _image(old["image"])
    preview = render("local", "1.20.0", _values(tmp_path, "veza-docs", {
        "enabled": True, "active": "blue", "standby": {"replicas": 1, "image": {"repository": REPO, "digest": NEW}}}))
    switched = render("local", "1.20.0", _values(tmp_path, "veza-docs", {
        "enabled": True, "active": "green", "standby": {"replicas": 1, "image": old_image}}, "switch.yaml",
        image={"repository": REPO, "digest": NEW}))
    before, after = _by_name(preview, "Deployment"), _by_name(switched, "Deployment")
    for name in ("veza-docs", "veza-docs-green"):
        assert after[name]["spec"] == before[name]["spec"], name   # no pod restarts, no scaling: a selector switch
    assert after["veza-docs-green"]["metadata"]["labels"]["veza.io/role"] == "active"
    assert after["veza-docs"]["metadata"]["labels"]["veza.io/role"] == "standby"
    services = _by_name(switched, "Service")
    assert services["veza-docs"]["spec"]["selector"]["veza.io/track"] == "green"
    assert services["veza-docs-preview"]["spec"]["selector"]["veza.io/track"] == "stable"
    retired = render("local", "1.20.0", _values(tmp_path, "veza-docs", {
        "enabled": True, "active": "green", "standby": {"replicas": 0, "image": old_image}}, "retire.yaml",
        image={"repository": REPO, "digest": NEW}))
    deps = _by_name(retired, "Deployment")
    assert deps["veza-docs"]["spec"]["replicas"] == 0 and deps["veza-docs-green"]["spec"]["replicas"] == 1


@pytest.mark.parametrize(("service", "body", "extra", "needle"), [
    ("veza-stream-server", {"enabled": True, "standby": {"image": {"repository": "r", "digest": NEW}}}, {},
     "persistent volume"),
    ("veza-docs", {"enabled": True}, {}, "services.veza-docs.blueGreen.standby.image is not set"),
    ("veza-docs", {"enabled": True, "standby": {"image": {"repository": "r", "digest": NEW}}},
     {"canary": {"enabled": True, "image": {"repository": "r", "digest": NEW}}}, "canary and blueGreen"),
    ("veza-docs", {"enabled": True, "active": "red", "standby": {"image": {"repository": "r", "digest": NEW}}}, {},
     "active"),
    ("veza-docs", {"enabled": True, "standby": {"image": {"repository": "r", "tag": "v2"}}}, {}, "a tag alone"),
])
def test_two_colours_that_cannot_run_are_one_clear_error(service: str, body: dict[str, Any], extra: dict[str, Any],
                                                         needle: str, tmp_path: Path) -> None:
    with pytest.raises(StageFailed) as err:
        render("prod", "1.20.0", _values(tmp_path, service, body, **extra))
    assert needle in err.value.message, err.value.message
