"""`invoke prune` on the real engine: old cache tags and the pipeline's dangling images go, the rest stays.

Everything here is scoped to this test's run label and a private cache repository: the shared engine's
build cache and other people's images are never touched (the dry run of the whole engine only lists).
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.machine.prune import apply_prune, plan_prune, run_prune
from pipeline.tools import docker as docker_tool

pytestmark = pytest.mark.engine


class Lines:
    """A Reporter that keeps its lines (the protocol of pipeline.core.reporter)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warn(self, msg: str) -> None:
        self.lines.append("warning: " + msg)

    def detail(self, msg: str) -> None:
        self.lines.append(msg)

    def stage_started(self, stage: str) -> None: ...

    def stage_finished(self, stage: str, status: str, detail: str = "") -> None: ...

    def step(self, stage: str, service: str, text: str, state: str = "running") -> None: ...


def _image(api: object, repo: str, tag: str, content: str, run_id: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = content.encode()
        info = tarfile.TarInfo("marker")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag,  # type: ignore[attr-defined]
                               changes=[f"LABEL veza.pipeline.run={run_id}",
                                        f"LABEL veza.pipeline.input-digest=sha256:{content:0>64}"])
    return str(api.inspect_image(f"{repo}:{tag}")["Id"])  # type: ignore[attr-defined]


def test_prune_old_cache_tags_and_dangling(run_id: str, docker_client: object, tmp_path: Path) -> None:
    api = docker_client.api  # type: ignore[attr-defined]
    cache_repo = f"veza-prune-test-{run_id}"
    ids = []
    try:
        for n in (1, 2, 3):
            ids.append(_image(api, f"{cache_repo}/svc", f"in-{n}", f"{run_id}{n}", run_id))
            time.sleep(1.1)   # image creation times have one-second resolution
        first_dangling = _image(api, f"{cache_repo}-scratch/x", "t", f"{run_id}d1", run_id)
        _image(api, f"{cache_repo}-scratch/x", "t", f"{run_id}d2", run_id)   # moves the tag: d1 is dangling
        ids.append(api.inspect_image(f"{cache_repo}-scratch/x:t")["Id"])

        plan = plan_prune(cap_bytes=0, cache_repo=cache_repo, keep=1, protected={ids[0]}, run=run_id)
        assert [(i.kind, i.ref) for i in plan.items] == [("dangling image", first_dangling),
                                                          ("cache tag", f"{cache_repo}/svc:in-2")]
        rep = Lines()
        kept = apply_prune(plan, rep)
        assert kept == [], rep.lines
        assert docker_tool.image_id(f"{cache_repo}/svc:in-2") is None
        assert docker_tool.image_id(first_dangling) is None
        assert docker_tool.image_id(f"{cache_repo}/svc:in-1") == ids[0]      # protected (the manifest's)
        assert docker_tool.image_id(f"{cache_repo}/svc:in-3") == ids[2]      # the newest
    finally:
        for image_id in reversed(ids):
            try:
                api.remove_image(image_id, force=True)
            except Exception:
                pass


def test_prune_dry_run_lists_and_removes_nothing(tmp_path: Path) -> None:
    cfg = load_config()
    rep = Lines()
    plan = run_prune(cfg, rep, dry_run=True, keep=1)
    assert rep.lines[0].startswith("build cache: ") and rep.lines[-1] == "dry run: nothing removed"
    assert sum(1 for ln in rep.lines if ln.startswith("  would remove ")) == len(plan.items)
    # Everything listed is still there.
    for item in plan.items:
        if item.kind != "build cache":
            assert docker_tool.image_id(item.ref) is not None, item
