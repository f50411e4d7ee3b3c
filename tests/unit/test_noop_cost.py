"""What keeps a no-op `invoke build` cheap: only the named stages are imported; manifest writes are batched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.paths import ROOT
from pipeline.core.stage_registry import STAGE_REGISTRY


def test_every_stage_name_has_a_class_and_only_the_named_ones_are_imported() -> None:
    code = ("import sys, json; from pipeline.release.runner import make_stages; "
            "s = make_stages(['build']); "
            "print(json.dumps([s[0].name, sorted(m for m in sys.modules if m.startswith('pipeline.stages.'))]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    name, stage_modules = json.loads(out)
    assert name == "build"
    for heavy in ("pipeline.stages.sign", "pipeline.stages.lint", "pipeline.stages.scan", "pipeline.stages.smoke"):
        assert heavy not in stage_modules


def test_make_stages_knows_every_configured_stage_and_refuses_unknown_ones() -> None:
    from pipeline.release.runner import make_stages

    assert [s.name for s in make_stages(list(STAGE_REGISTRY))] == list(STAGE_REGISTRY)
    with pytest.raises(UsageError, match="unknown stage"):
        make_stages(["build", "compile"])


def test_batch_saves_once_at_its_end_and_nested_batches_wait_for_the_outer(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    m = Manifest.new(path, env="t", release_id="t-abc", version={})
    m.save()
    saved = path.stat().st_mtime_ns, path.read_text()
    with m.batch():
        m.set_service("a", repository="r/a")
        with m.batch():
            m.set_service("b", repository="r/b")
        assert path.read_text() == saved[1], "a nested batch saved before the outer one ended"
        m.record("a", "build", {"status": "reused"})
        assert path.read_text() == saved[1]
    data = json.loads(path.read_text())
    assert data["services"]["a"]["build"]["status"] == "reused" and data["services"]["b"]["repository"] == "r/b"
    m.set_service("c", repository="r/c")            # outside a batch: saved at once, as before
    assert "c" in json.loads(path.read_text())["services"]


def test_batch_saves_what_it_holds_when_the_block_fails(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    m = Manifest.new(path, env="t", release_id="t-abc", version={})
    with pytest.raises(RuntimeError), m.batch():
        m.set_service("a", repository="r/a")
        raise RuntimeError("boom")
    assert json.loads(path.read_text())["services"]["a"]["repository"] == "r/a"
