"""dev, staging and prod each release end to end on the pipeline's own cluster, from fresh clones, as a user runs
them (`invoke release --env ENV --yes`); prod from a clean clone with a release tag, including `verify`, and a
prod release whose verification fails is rolled back (exit 5). `invoke status` matches each manifest.

The images are shared with the other e2e tests through the engine: a clone builds nothing whose input digest the
engine already holds (build reuse), so after the first release every other one re-tags and pushes.
Port-forwards use 127.0.0.1:19750-19799. Each test removes its release, namespace, volumes and host directories.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.release_support import (
    clone_repo,
    flat,
    invoke,
    latest_report,
    manifest,
    remove_release,
    status_matches,
    tag_release,
)

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def env_clone(tmp_path: Path, local_cluster: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    env, namespace = request.param
    dest = clone_repo(tmp_path)
    remove_release(local_cluster, namespace)  # a leftover of an interrupted earlier run
    if env in ("staging", "prod"):  # no auto_key there: the user makes the environment's signing key first
        made = invoke(dest, "keygen", "--env", env)
        assert made.returncode == 0, made.stdout + made.stderr
    try:
        yield dest
    finally:
        remove_release(local_cluster, namespace)


def _release_ok(clone: Path, env: str, stages: tuple[str, ...]) -> dict[str, object]:
    run = invoke(clone, "release", "--env", env, "--yes")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    m = manifest(clone, env)
    assert m["env"] == env
    for stage in stages:
        assert m["stages"][stage]["status"] == "ok", (stage, m["stages"])  # type: ignore[index]
    out = flat(run.stdout)
    assert "Pod Security gate (restricted, checked by the pipeline)" in out, out[-4000:]
    assert "no Pod Security admission" in out and "NetworkPolicies" in out, out[-4000:]
    status_matches(clone, env)
    return m


@pytest.mark.parametrize("env_clone", [("dev", "veza-dev")], indirect=True)
def test_release_dev_end_to_end(env_clone: Path) -> None:
    m = _release_ok(env_clone, "dev", ("build", "scan", "push", "deploy"))
    deploy = m["services"]["veza-stream-server"]["deploy"]  # type: ignore[index]
    assert deploy["status"] == "deployed" and deploy["namespace"] == "veza-dev"


@pytest.mark.parametrize("env_clone", [("staging", "veza-staging")], indirect=True)
def test_release_staging_end_to_end(env_clone: Path) -> None:
    m = _release_ok(env_clone, "staging", ("build", "scan", "smoke", "push", "deploy"))
    assert all(s["smoke"]["status"] == "pass" for s in m["services"].values()), m["services"]  # type: ignore[union-attr]


@pytest.mark.parametrize("env_clone", [("prod", "veza-prod")], indirect=True)
def test_release_prod_from_a_tagged_clean_clone_then_a_failing_verification_is_rolled_back(env_clone: Path) -> None:
    clone = env_clone
    assert tag_release(clone) == "v0.1.0"
    m = _release_ok(clone, "prod", ("build", "scan", "smoke", "push", "deploy", "verify"))
    report = latest_report(clone, "prod")
    assert [s["name"] for s in report["stages"]][-1] == "verify"  # type: ignore[index]
    first_docs = m["services"]["veza-docs"]["push"]["digest"]  # type: ignore[index]
    first_revision = m["services"]["veza-docs"]["deploy"]["revision"]  # type: ignore[index]

    # A release whose verification fails: a new docs image, and a ready path in pipeline.toml that it does not
    # serve (the chart's own readiness probe still passes, so Helm succeeds and the pipeline's verification fails).
    page = clone / "services/docs/site/index.html"
    page.write_text(page.read_text().replace("</body>", "<!-- e2e: verification must fail --></body>"))
    toml = clone / "pipeline.toml"
    text = toml.read_text()
    docs_at = text.index('name = "veza-docs"')
    ready_at = text.index('ready_path = "/ready"', docs_at)
    toml.write_text(text[:ready_at] + 'ready_path = "/e2e-not-served"' + text[ready_at + len('ready_path = "/ready"'):])
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "fix: docs page"], check=True, timeout=60)
    assert tag_release(clone) == "v0.1.1"
    failed = invoke(clone, "release", "--env", "prod", "--yes")
    assert failed.returncode == 5, failed.stdout[-8000:] + failed.stderr[-3000:]
    assert "verification failed" in flat(failed.stdout + failed.stderr)
    assert "rolled back" in flat(failed.stdout + failed.stderr)
    # The world now differs from the failed release's manifest in exactly one way: docs runs the first image.
    st = invoke(clone, "status", "--env", "prod", "--json")
    assert st.returncode == 7, st.stdout + st.stderr
    info = json.loads(st.stdout)
    assert [d.split(":")[0] for d in info["differences"]] == ["veza-docs"], info["differences"]
    docs = info["services"]["veza-docs"]
    assert docs["digest"] == first_docs and docs["ready"] == docs["replicas"], docs
    assert info["revision"] > first_revision and info["status"] == "deployed"
