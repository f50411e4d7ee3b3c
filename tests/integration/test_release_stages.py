"""Release orchestration on the real engine and a real registry, with the mini project (build → push).

No-op rerun, one changed service, gates before anything runs, the environment lock, and an interrupted push
that resumes without pushing anything twice (counted in the registry's own request log).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.contract.context import RunContext
from pipeline.contract.options import RunOptions
from pipeline.core.config import Config
from pipeline.core.errors import GitStateError, PolicyBlocked
from pipeline.core.lock import EnvLock, LockHeld
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.local.registry import LocalRegistry
from pipeline.release.release import run_release as release
from tests.integration.build_fixtures import MiniProject
from tests.integration.registry_fixtures import FlakyProxy, free_port

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]

ENVS = """
[environments.rel]
registry = "{registry}"
registry_namespace = "mini-{run}"
namespace = "mini-rel"
values_file = "values.yaml"
stages = ["build", "push"]
tags = ["sha", "branch"]

[environments.prod]
registry = "{registry}"
registry_namespace = "mini-{run}"
namespace = "mini-prod"
values_file = "values.yaml"
stages = ["build", "push"]
tags = ["semver"]
require_clean_tree = true
require_release_tag = true
confirm = true
"""


class SlowProxy(FlakyProxy):
    """A proxy that waits before opening each upstream connection: it makes a push slow enough to interrupt."""

    delay = 0.6

    def _pipe_pair(self, client: object) -> None:
        time.sleep(self.delay)
        super()._pipe_pair(client)  # type: ignore[arg-type]


@pytest.fixture
def release_project(mini_project: MiniProject, tmp_path: Path) -> Iterator[tuple[MiniProject, LocalRegistry]]:
    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        text = (mini_project.root / "pipeline.toml").read_text()
        mini_project.write("pipeline.toml", text + ENVS.format(registry=reg.address, run=mini_project.run))
        mini_project.commit("chore: release envs")
        yield mini_project, reg


def run_release(env: str, *, cfg: Config, **kw: object) -> RunContext | None:
    return release(cfg, cfg.env(env), PlainReporter(), **kw)  # type: ignore[arg-type]


def _stages(ctx: RunContext) -> dict[str, str]:
    """The listed stages' outcomes (the attached sbom and published stages are asserted where they matter)."""
    return {o.name: str(o.status) for o in ctx.state.outcomes if o.name in ctx.env.stages}


def test_release_noop_rerun_and_one_changed_service(release_project: tuple[MiniProject, LocalRegistry]) -> None:
    p, reg = release_project
    ctx = run_release("rel", cfg=p.config)
    assert ctx is not None and _stages(ctx) == {"build": "ok", "push": "ok"}
    m = Manifest.load(p.root / ".pipeline/rel/manifest.json")
    digests = {s: m.service(s)["push"]["digest"] for s in m.services()}
    assert all(d and d.startswith("sha256:") for d in digests.values())
    report = json.loads((ctx.run_dir / "report.json").read_text())
    assert report["status"] == "ok" and [s["name"] for s in report["stages"]] == ["build", "push"]
    assert "| build |" in (ctx.run_dir / "report.md").read_text()

    # Same commit again: everything is resumed, nothing redone.
    t0 = time.monotonic()
    again = run_release("rel", cfg=p.config)
    assert again is not None and _stages(again) == {"build": "resumed", "push": "resumed"}
    assert time.monotonic() - t0 < 10

    # One service changes: only it is built and pushed; the others are reused by digest.
    p.write("services/gamma/main.txt", "gamma v2\n")
    p.commit("feat(gamma): v2")
    third = run_release("rel", cfg=p.config)
    assert third is not None and _stages(third) == {"build": "ok", "push": "ok"}
    m = Manifest.load(p.root / ".pipeline/rel/manifest.json")
    assert {s: m.service(s)["build"]["status"] for s in m.services()} == {
        "alpha": "reused", "beta": "reused", "gamma": "built"}
    assert m.service("alpha")["push"]["digest"] == digests["alpha"]
    assert m.service("gamma")["push"]["digest"] != digests["gamma"]
    assert m.service("alpha")["push"]["method"] == "retag"  # already in the registry: new tags only, no upload


def test_prod_gates_refuse_before_anything_runs(release_project: tuple[MiniProject, LocalRegistry]) -> None:
    p, _ = release_project
    manifest = p.root / ".pipeline/prod/manifest.json"
    p.write("services/alpha/main.txt", "uncommitted\n")
    with pytest.raises(GitStateError) as info:
        run_release("prod", yes=True, cfg=p.config)
    assert info.value.exit_code == 2 and "prod requires a clean tree" in info.value.message
    assert not manifest.exists()
    p.commit("fix(alpha): commit it")
    with pytest.raises(GitStateError) as info:
        run_release("prod", yes=True, cfg=p.config)
    assert "prod requires a semver release tag on HEAD" in info.value.message
    assert not manifest.exists()


def test_second_release_to_same_env_is_refused_and_stale_lock_taken_over(
        release_project: tuple[MiniProject, LocalRegistry], capsys: pytest.CaptureFixture[str]) -> None:
    p, _ = release_project
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_dir = p.root / ".pipeline/locks"
        lock_dir.mkdir(parents=True)
        (lock_dir / "rel.lock").write_text(json.dumps({
            "user": "alice", "host": os.uname().nodename, "pid": holder.pid, "started": "2026-11-25T10:00:00Z",
            "release_id": "rel-abc1234"}))
        with pytest.raises(LockHeld) as info:
            run_release("rel", cfg=p.config)
        assert info.value.exit_code == 2
        assert f"another release to rel is running: alice@{os.uname().nodename} pid {holder.pid}" in info.value.message
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale and taken over, with a message.
    ctx = run_release("rel", cfg=p.config)
    assert ctx is not None and _stages(ctx)["push"] == "ok"
    assert "took over a stale lock on rel" in capsys.readouterr().out
    assert not (p.root / ".pipeline/locks/rel.lock").exists()


def test_env_lock_is_exclusive(tmp_path: Path) -> None:
    with EnvLock(tmp_path, "dev", "dev-1234567"):
        with pytest.raises(LockHeld):
            EnvLock(tmp_path, "dev", "dev-7654321").acquire()
    EnvLock(tmp_path, "dev", "dev-7654321").acquire()


def _manifest_puts(log: Path) -> Counter[str]:
    """PUT .../manifests/<tag> requests that the registry answered 201, from its own access log."""
    return Counter(m.group(1) for m in re.finditer(r'"PUT (/v2/\S+/manifests/\S+) HTTP/1\.1" 201', log.read_text()))


def test_interrupted_push_resumes_without_pushing_twice(mini_project: MiniProject, tmp_path: Path) -> None:
    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        proxy = SlowProxy(reg.port)
        try:
            p = mini_project
            p.write("pipeline.toml", (p.root / "pipeline.toml").read_text()
                    + ENVS.format(registry=proxy.address, run=p.run))
            p.commit("chore: release envs")
            env = {**os.environ, "VEZA_CONFIG": str(p.root / "pipeline.toml"), "CI": "true"}
            argv = [str(ROOT / ".venv/bin/invoke"), "-r", str(ROOT), "release", "--env", "rel"]
            # Its own process group, signalled as a whole: what a terminal's Ctrl-C does.
            first = subprocess.Popen(argv, cwd=p.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
            manifest = p.root / ".pipeline/rel/manifest.json"

            def pushing() -> bool:
                return bool(_manifest_puts(reg.log_file))

            deadline = time.monotonic() + 180
            while not pushing() and time.monotonic() < deadline and first.poll() is None:
                time.sleep(0.05)
            os.killpg(first.pid, signal.SIGINT)
            out, _ = first.communicate(timeout=120)
            assert first.returncode == 130, out
            m = json.loads(manifest.read_text())
            assert m["stages"]["build"]["status"] == "ok"
            assert m["stages"]["push"]["status"] == "interrupted"
            # The manifest says exactly what is pushed: every image recorded as pushed is in the registry.
            before = _manifest_puts(reg.log_file)
            for name, svc in m["services"].items():
                if (svc.get("push") or {}).get("status") == "pushed":
                    assert any(f"/mini-{p.run}/{name}/" in k for k in before), name

            second = subprocess.run(argv, cwd=p.root, env=env, capture_output=True, text=True, timeout=300)
            assert second.returncode == 0, second.stdout + second.stderr
            assert "── build: resumed" in second.stdout and "checked: still holds" in second.stdout
            after = _manifest_puts(reg.log_file)
            inputs = [k for k in after if "/manifests/in-" in k]   # the input tag of each (registry_reuse.py)
            assert len(after) - len(inputs) == 6 and len(inputs) == 3, after   # 3 images × 2 tags, all present now
            assert max(after.values()) == 1, after  # and none was pushed twice
        finally:
            proxy.close()


def _catalog(reg: LocalRegistry) -> list[str]:
    from pipeline.tools.registry_api import RegistryClient

    return RegistryClient(reg.address).catalog()


def test_blocked_scan_stops_the_release_before_push(release_project: tuple[MiniProject, LocalRegistry]) -> None:
    """A secret planted in one image: the scan gate blocks (exit 3) and nothing reaches the registry."""
    p, reg = release_project
    key_id, secret = "AKIA" + "2E0A8F3B244C9986", "g7pYbD2mRkzQ8uWf1xN3" + "hT5vJ0aLcE6sK9oP4iB7"
    p.write("services/alpha/credentials", f"aws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n")
    rel = 'stages = ["build", "push"]\ntags = ["sha", "branch"]'
    text = (p.root / "pipeline.toml").read_text().replace(rel, rel.replace('"build", ', '"build", "scan", '))
    scan = '[scan]\nscanners = ["secret"]\ndb_repository = ""\n\n'
    p.write("pipeline.toml", text.replace("[project]", scan + "[project]"))
    p.commit("feat(alpha): credentials")
    with pytest.raises(PolicyBlocked) as info:
        run_release("rel", cfg=p.config)
    assert info.value.exit_code == 3 and "blocked: alpha" in info.value.message
    m = json.loads((p.root / ".pipeline/rel/manifest.json").read_text())
    assert m["stages"]["scan"]["status"] == "blocked" and m["stages"]["scan"]["exit_code"] == 3
    assert "push" not in m["stages"]
    assert m["services"]["alpha"]["scan"]["status"] == "blocked"
    assert _catalog(reg) == []
    assert secret not in (p.root / ".pipeline/rel/manifest.json").read_text()


def test_failed_smoke_stops_the_release_before_push(tmp_path: Path) -> None:
    """The real services: one crashes on start under compose → exit 4 with its reason; nothing pushed."""
    import dataclasses

    from pipeline.core.config import load_config
    from pipeline.core.errors import SmokeFailed

    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        base = load_config()
        env = dataclasses.replace(base.env("staging"), name="gate", registry=reg.address, registry_namespace="gate",
                                  stages=("build", "smoke", "push"), reuse_from=())   # the only environment
        cfg = dataclasses.replace(base, state_dir=tmp_path / "state", environments={"gate": env})
        crash = ROOT / "tests/integration/smoke_overrides/crash-stream-server.yml"
        with pytest.raises(SmokeFailed) as info:
            run_release("gate", cfg=cfg, options=RunOptions(compose_overrides=(crash,)))
        assert info.value.exit_code == 4 and "stream-server exited with code" in info.value.message
        m = json.loads((tmp_path / "state/gate/manifest.json").read_text())
        smoke = m["stages"]["smoke"]
        assert smoke["status"] == "failed" and smoke["exit_code"] == 4 and "push" not in m["stages"]
        # The runner keeps what the failing stage said: its logs and the extra compose file it was told to use.
        assert Path(smoke["logs"]).is_dir() and smoke["compose_overrides"] == [str(crash)]
        assert _catalog(reg) == []


def test_registry_storage_wiped_then_the_release_pushes_again_exactly_the_missing_images(
        mini_project: MiniProject, tmp_path: Path) -> None:
    """The journal says "pushed"; the registry lost its storage: the rerun sees it and pushes every image again."""
    import shutil

    p = mini_project
    port = free_port()
    with LocalRegistry(port, root=tmp_path / "registry") as reg:
        p.write("pipeline.toml", (p.root / "pipeline.toml").read_text() + ENVS.format(registry=reg.address, run=p.run))
        p.commit("chore: release envs")
        first = run_release("rel", cfg=p.config)
        assert first is not None and _stages(first)["push"] == "ok"
        data = reg.data_dir
    shutil.rmtree(data)                                   # the storage is gone (a new disk, a wiped volume)
    with LocalRegistry(port, root=tmp_path / "registry") as reg:
        before = _manifest_puts(reg.log_file)             # the log file outlives the storage: count the new PUTs
        lines: list[str] = []
        again = release(p.config, p.config.env("rel"), PlainReporter(sink=lines.append))
        assert again is not None and _stages(again) == {"build": "resumed", "push": "ok"}, lines
        assert any("pushing again" in line and "registry serves nothing" in line for line in lines), lines
        puts = _manifest_puts(reg.log_file) - before
        inputs = [k for k in puts if "/manifests/in-" in k]   # and the input tag of each (registry_reuse.py)
        assert len(puts) - len(inputs) == 6 and len(inputs) == 3, puts   # 3 images × 2 tags
        assert max(puts.values()) == 1, puts                              # each exactly once
        from pipeline.tools.registry_api import RegistryClient

        m = Manifest.load(p.root / ".pipeline/rel/manifest.json")
        client = RegistryClient(reg.address)
        for name in m.services():
            pushed = m.pushed(name)
            assert pushed is not None and pushed.ok
            ref = client.head_manifest(pushed.repository.split("/", 1)[1], pushed.tags[0])
            assert ref is not None and ref.digest == pushed.digest, name
