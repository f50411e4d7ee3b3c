"""`invoke bases` on the real engine: the no-op rerun, the build path (recipe digest label), and the pull path
against a real loopback registry standing in for an upstream one (upstream registries are unreachable here).

The build and pull tests use private image names; the project's own base images are only read.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import Base, Config, load_config
from pipeline.local.bases import (
    LABEL_BUILDER,
    LABEL_LAYERS,
    LABEL_PACKAGES,
    LABEL_PARENT,
    LABEL_RECIPE_DIGEST,
    ensure_bases,
    layers_digest,
    missing_build_facts,
    resolve_recipes,
)
from pipeline.local.registry import LocalRegistry
from pipeline.tools import docker as docker_tool
from pipeline.tools import proc
from tests.integration.registry_fixtures import free_loopback_port

pytestmark = pytest.mark.engine


def _free_port() -> int:
    """A free port of this area's allocation (127.0.0.1:18090-18099)."""
    return free_loopback_port(18090, 18099)


def _with_bases(cfg: Config, bases: dict[str, Base]) -> Config:
    return dataclasses.replace(cfg, bases=bases)


@pytest.fixture
def private_refs(docker_client: Any) -> Iterator[list[str]]:
    """Image refs a test creates; all removed afterwards."""
    refs: list[str] = []
    yield refs
    for ref in reversed(refs):
        try:
            docker_client.api.remove_image(ref, force=True)
        except Exception:  # absent already
            pass


def test_rerun_with_everything_present_is_a_fast_noop() -> None:
    ensure_bases(say=lambda _l: None)          # make sure they exist (builds only on a fresh machine)
    lines: list[str] = []
    t0 = time.monotonic()
    outcomes = ensure_bases(say=lines.append)
    assert time.monotonic() - t0 < 2.0
    assert {o.path for o in outcomes} == {"present"}
    assert len(lines) == 1 and "nothing to do" in lines[0]
    # And as the real command, interpreter start-up included.
    t0 = time.monotonic()
    res = proc.run([str(Path(__file__).resolve().parents[2] / ".venv/bin/invoke"), "bases"], timeout=60)
    assert time.monotonic() - t0 < 2.0, res.stdout
    assert "nothing to do" in res.stdout


def test_infra_images_run_as_non_root_with_a_healthcheck(docker_client: Any) -> None:
    cfg = load_config(check_files=False)
    for infra in cfg.infra.values():
        ref = cfg.bases[infra.base].local
        conf = docker_client.api.inspect_image(ref)["Config"]
        assert conf["User"] not in ("", "0", "root", "0:0"), ref
        assert conf["Healthcheck"]["Test"][0] in ("CMD", "CMD-SHELL"), ref
        assert f"{infra.port}/tcp" in conf["ExposedPorts"], ref


def test_build_path_labels_the_recipe_digest_then_reruns_as_present(private_refs: list[str],
                                                                    docker_client: Any) -> None:
    cfg = load_config(check_files=False)
    run = uuid.uuid4().hex[:8]
    redis = dataclasses.replace(cfg.bases["redis"], local=f"veza-test-{run}/redis:7")
    private_refs.append(redis.local)
    small = _with_bases(cfg, {"debian": cfg.bases["debian"], "redis": redis})
    lines: list[str] = []
    outcomes = {o.name: o for o in ensure_bases(config=small, try_pull=False, say=lines.append)}
    assert outcomes["debian"].path == "present"
    assert outcomes["redis"].path == "built", lines
    assert not any("pull of" in ln for ln in lines)          # --no-pull: not even tried
    labels = docker_client.api.inspect_image(redis.local)["Config"]["Labels"]
    assert labels[LABEL_RECIPE_DIGEST] == resolve_recipes(small.bases)["redis"].digest
    assert labels["veza.pipeline.base"] == "redis"
    # the build facts its provenance is made of (pipeline/stages/infra_provenance.py)
    assert missing_build_facts(labels) == []
    layers = docker_client.api.inspect_image(redis.local)["RootFS"]["Layers"]
    assert labels[LABEL_LAYERS] == layers_digest(layers)      # the label-only step added no layer
    packages = dict(p.split("=", 1) for p in labels[LABEL_PACKAGES].split(","))
    assert packages["redis-server"] and "dpkg" in packages
    builder = json.loads(labels[LABEL_BUILDER])
    assert builder["kind"] in ("buildx", "legacy") and builder["engine"] and builder["started"]
    debian_id = docker_client.api.inspect_image(cfg.bases["debian"].local)["Id"]
    assert labels[LABEL_PARENT] == f"{cfg.bases['debian'].local}@{debian_id}"
    again = {o.name: o for o in ensure_bases(config=small, try_pull=False, say=lambda _l: None)}
    assert again["redis"].path == "present"


def _tiny_image(ref: str, run: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"upstream\n"
        info = tarfile.TarInfo("etc/upstream-marker")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    repo, tag = ref.rsplit(":", 1)
    docker_tool.client().api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag,
                                                    changes=[f"LABEL veza.pipeline.run={run}"])


def test_pull_path_is_taken_when_the_upstream_answers(tmp_path: Path, private_refs: list[str],
                                                      docker_client: Any) -> None:
    run = uuid.uuid4().hex[:8]
    with LocalRegistry(_free_port(), root=tmp_path / "registry") as reg:
        upstream = f"{reg.address}/upstream-{run}/nats:2.9-alpine"
        local = f"veza-test-{run}/nats:2.9"
        private_refs.extend([upstream, local])
        _tiny_image(upstream, run)
        proc.run(["docker", "push", upstream], timeout=120)
        digest = docker_client.api.inspect_image(upstream)["RepoDigests"][0].partition("@")[2]
        docker_client.api.remove_image(upstream, force=True)      # only the registry has it now
        pin = f"{upstream.rsplit(':', 1)[0]}@{digest}"
        private_refs.append(pin)
        cfg = load_config(check_files=False)
        nats = dataclasses.replace(cfg.bases["nats"], upstream=f"{upstream}@{digest}", local=local)  # pinned
        small = _with_bases(cfg, {"nats": nats})
        lines: list[str] = []
        outcomes = ensure_bases(config=small, try_pull=True, say=lines.append)
        assert [(o.name, o.path) for o in outcomes] == [("nats", "pulled")], lines
        assert any(f"pulled {pin}" in ln for ln in lines)          # by the pinned digest
        assert pin in docker_client.api.inspect_image(local)["RepoDigests"]
        again = ensure_bases(config=small, say=lines.append)
        assert again[0].path == "present" and again[0].detail == f"pulled upstream {pin}"


def test_unreachable_upstream_falls_back_to_the_recipe_and_is_asked_once(private_refs: list[str],
                                                                         docker_client: Any) -> None:
    cfg = load_config(check_files=False)
    run = uuid.uuid4().hex[:8]
    port = _free_port()                      # nothing listens there: connection refused
    pin = "@sha256:" + "ab" * 32   # only a pinned upstream is pulled
    redis = dataclasses.replace(cfg.bases["redis"], upstream=f"127.0.0.1:{port}/up/redis:7{pin}",
                                local=f"veza-test-{run}/redis:7")
    nats = dataclasses.replace(cfg.bases["nats"], upstream=f"127.0.0.1:{port}/up/nats:2.9{pin}",
                               local=f"veza-test-{run}/nats:2.9")
    private_refs.extend([redis.local, nats.local])
    small = _with_bases(cfg, {"debian": cfg.bases["debian"], "redis": redis, "nats": nats})
    lines: list[str] = []
    outcomes = {o.name: o.path for o in ensure_bases(config=small, try_pull=True, say=lines.append)}
    assert outcomes == {"debian": "present", "redis": "built", "nats": "built"}, lines
    tried = [ln for ln in lines if "pull of" in ln]
    assert len(tried) == 2 and "failed" in tried[0] and f"skipped (127.0.0.1:{port} unreachable)" in tried[1]
