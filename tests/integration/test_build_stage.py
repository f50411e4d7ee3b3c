"""Build stage on the real engine: plan by input digest, reuse, rebuild exactly what changed, failures, labels."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.contract.options import RunOptions
from pipeline.core.errors import StageFailed, UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.release.runner import run_command
from pipeline.stages.build import dry_run_plan
from pipeline.tools import docker
from tests.integration.build_fixtures import MiniProject, make_base_image

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True, params=["buildkit", "legacy"])
def builder_kind(request: pytest.FixtureRequest, mini_project: MiniProject) -> str:
    """Every test here runs with the BuildKit path and with the legacy builder ([build].builder)."""
    kind = str(request.param)
    mini_project.write("pipeline.toml",
                       (mini_project.root / "pipeline.toml").read_text() + f'\n[build]\nbuilder = "{kind}"\n')
    mini_project.commit(f"chore: builder {kind}")
    return kind

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "pipeline/core/schemas/manifest.schema.json").read_text())


def run_build(services: list[str], p: MiniProject, **options: Any) -> None:
    cfg = p.config
    run_command(cfg, cfg.env("dev"), ["build"], PlainReporter(), services=services, options=RunOptions(**options))


def _build(p: MiniProject, services: list[str] | None = None, **options: Any) -> dict[str, str]:
    run_build(services or [], p, **options)
    m = Manifest.load(p.root / ".pipeline/dev/manifest.json")
    return {n: str(b.status) for n in (services or m.services()) if (b := m.built(n)) is not None}


def test_build_all_then_noop_then_one_change(mini_project: MiniProject, builder_kind: str) -> None:
    p = mini_project
    assert _build(p) == {"alpha": "built", "beta": "built", "gamma": "built"}
    first = p.image_ids()
    manifest = json.loads((p.root / ".pipeline/dev/manifest.json").read_text())
    jsonschema.validate(manifest, SCHEMA)
    assert manifest["stages"]["build"]["builder"] == builder_kind
    log = Path(manifest["services"]["alpha"]["build"]["log"]).read_text()
    assert ("#1 [internal] load build definition" in log) == (builder_kind == "buildkit")

    # Labels: OCI + input digest on every image.
    for svc, image_id in first.items():
        labels = docker.inspect_image(image_id)["Config"]["Labels"]
        assert labels["org.opencontainers.image.source"] == "https://example.invalid/mini"
        assert labels["org.opencontainers.image.revision"] == manifest["version"]["sha"]
        assert labels["org.opencontainers.image.created"]
        assert labels["org.opencontainers.image.version"]
        assert labels["veza.pipeline.input-digest"] == manifest["services"][svc]["input_digest"]
        for tag in manifest["services"][svc]["tags"]:
            assert docker.image_id(f"{manifest['services'][svc]['repository']}:{tag}") == image_id

    # Nothing changed: nothing built, same image IDs.
    assert _build(p) == {"alpha": "reused", "beta": "reused", "gamma": "reused"}
    assert p.image_ids() == first

    # A .dockerignore'd file changes: no rebuild.
    p.write("services/alpha/scratch.tmp", "ignored\n")
    p.write("services/alpha/notes/todo.md", "ignored too\n")
    assert _build(p)["alpha"] == "reused"

    # One service's source changes (and a new commit): only it rebuilds.
    p.write("services/beta/main.txt", "beta v2\n")
    p.commit("fix(beta): change")
    statuses = _build(p)
    assert statuses == {"alpha": "reused", "beta": "built", "gamma": "reused"}
    assert Manifest.load(p.root / ".pipeline/dev/manifest.json").service("beta")["build"]["why"] == "main.txt modified"
    second = p.image_ids()
    assert second["alpha"] == first["alpha"] and second["gamma"] == first["gamma"]
    assert second["beta"] != first["beta"]


def test_build_arg_and_base_changes_rebuild(mini_project: MiniProject) -> None:
    p = mini_project
    _build(p)
    before = p.image_ids()
    # A build argument changes for beta only.
    text = (p.root / "pipeline.toml").read_text().replace('GREETING = "hi"', 'GREETING = "bonjour"')
    p.write("pipeline.toml", text)
    p.commit("chore: greeting")
    assert _build(p) == {"alpha": "reused", "beta": "built", "gamma": "reused"}
    # The shared base changes: every service that uses it rebuilds, the other does not.
    make_base_image(f"mini-base-{p.run}:local", "base v2", p.run)
    assert _build(p) == {"alpha": "built", "beta": "built", "gamma": "reused"}
    after = p.image_ids()
    assert after["gamma"] == before["gamma"] and after["alpha"] != before["alpha"]


def test_failing_dockerfile_others_still_built(mini_project: MiniProject) -> None:
    p = mini_project
    p.write("dockerfiles/beta.Dockerfile", "FROM scratch\nCOPY does-not-exist /x\n")
    p.commit("chore: break beta")
    with pytest.raises(StageFailed) as info:
        _build(p)
    assert "build failed for beta" in info.value.message
    m = Manifest.load(p.root / ".pipeline/dev/manifest.json")
    assert m.service("alpha")["build"]["status"] == "built"
    assert m.service("gamma")["build"]["status"] == "built"
    beta = m.service("beta")["build"]
    assert beta["status"] == "failed"
    log = Path(beta["log"])
    assert log.exists() and "does-not-exist" in log.read_text()


def test_fail_fast_stops_other_builds(mini_project: MiniProject) -> None:
    p = mini_project
    p.write("dockerfiles/alpha.Dockerfile", "FROM scratch\nCOPY nope /x\n")
    p.write("dockerfiles/beta.Dockerfile", "FROM mini-base-" + p.run + ":local\nRUN sleep 60\n")
    p.commit("chore: break alpha, slow beta")
    t0 = time.monotonic()
    with pytest.raises(StageFailed):
        run_build(["alpha", "beta"], p, workers=2, fail_fast=True)
    assert time.monotonic() - t0 < 45
    m = Manifest.load(p.root / ".pipeline/dev/manifest.json")
    assert m.service("alpha")["build"]["status"] == "failed"
    assert m.service("beta")["build"]["status"] in ("cancelled", "failed")


def test_unknown_service_and_dry_run(mini_project: MiniProject, capsys: pytest.CaptureFixture[str]) -> None:
    p = mini_project
    with pytest.raises(UsageError) as info:
        run_build(["delta"], p)
    assert info.value.one_line() == "unknown service 'delta' (fix: use one of: alpha, beta, gamma)"
    cfg = p.config
    plan = dry_run_plan(cfg, cfg.env("dev"), ["alpha"], PlainReporter())
    assert [s.action for s in plan.services] == ["build", "skip", "skip"]
    out = capsys.readouterr().out
    assert "alpha" in out and "build" in out and "skip" in out and "not selected" in out
    assert not (p.root / ".pipeline/dev/manifest.json").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_build_through_tcp_engine_endpoint(mini_project: MiniProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """DOCKER_HOST pointing at a TCP endpoint on loopback (a remote build host) works the same."""
    port = _free_port()
    proxy = subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                              "UNIX-CONNECT:/var/run/docker.sock"])
    try:
        time.sleep(0.5)
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
        docker.client.cache_clear()
        assert docker.engine_host() == f"tcp://127.0.0.1:{port}"
        assert _build(mini_project, services=["gamma"])["gamma"] == "built"
        assert _build(mini_project, services=["gamma"])["gamma"] == "reused"
    finally:
        docker.client.cache_clear()
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(10)
