"""The smoke test on the real stack: it passes, records the result, leaves nothing, and runs concurrently."""

from __future__ import annotations

import json
import stat
import threading
from typing import Any

import pytest

from tests.integration.smoke_fixtures import *  # noqa: F403 - the pytest fixtures
from tests.integration.smoke_fixtures import SmokeRun

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_smoke_passes_on_the_real_stack(smoke_run: SmokeRun) -> None:
    rc, out = smoke_run.invoke()
    assert rc == 0, out
    # Every probe of pipeline.toml and every functional check ran and passed.
    for line in ("veza-backend-api     /ready is true (deps answer)",
                 "veza-backend-api     PUT+GET /api/v1/tracks/{id} (JWT)",
                 "veza-backend-api     POST+GET /api/v1/tracks/{id}/plays (JWT)",
                 "veza-chat-server     POST /messages?room=pipeline-check → NATS",
                 "veza-stream-server   PUT+GET /streams/{id}", "veza-docs            GET / serves the HTML index",
                 "veza-backend-api     GET /version"):
        assert f"ok   {line}" in out, out
    assert "FAIL" not in out
    m = smoke_run.manifest()
    stage = m["stages"]["smoke"]
    assert stage["status"] == "ok" and stage["run_id"] == smoke_run.run_id
    assert set(stage["timings"]) >= {"up_s", "probes_s", "down_s"}
    for name, svc in m["services"].items():
        assert svc["smoke"]["status"] == "pass", name
        # The exact image the build recorded is the one that ran.
        assert svc["smoke"]["image"] == svc["build"]["image_id"], name
        assert svc["smoke"]["checks"] and all(c["ok"] for c in svc["smoke"]["checks"]), name
    report = json.loads((smoke_run.run_dir / "smoke.json").read_text())
    assert report["status"] == "pass" and len(report["checks"]) >= 12
    # The run's env file (passwords) does not outlive the stack.
    assert not (smoke_run.run_dir / "compose.env").exists()
    assert smoke_run.leftovers() == ""


def test_two_smoke_runs_at_the_same_time_both_pass(smoke_run_factory: Any) -> None:
    runs: list[SmokeRun] = [smoke_run_factory(), smoke_run_factory()]
    procs = [r.start() for r in runs]          # both started before either is waited for
    outs = [p.communicate(timeout=400) for p in procs]
    for r, p, (out, err) in zip(runs, procs, outs, strict=True):
        assert p.returncode == 0, f"{r.run_id}:\n{out}{err}"
        assert r.manifest()["stages"]["smoke"]["status"] == "ok"
        assert r.leftovers() == ""


def test_env_file_is_private_while_the_stack_runs(smoke_run: SmokeRun) -> None:
    """The generated env file holds the passwords: mode 0600 as soon as it exists, and no password
    appears in the compose files, the manifest or the report."""
    seen: list[int] = []
    done = threading.Event()
    env_file = smoke_run.run_dir / "compose.env"

    def watch() -> None:
        while not done.is_set():
            try:
                seen.append(stat.S_IMODE(env_file.stat().st_mode))
            except FileNotFoundError:
                pass
            done.wait(0.05)

    t = threading.Thread(target=watch)
    t.start()
    try:
        p = smoke_run.start()
        secrets: list[str] = []
        while p.poll() is None and not secrets:
            if env_file.exists():
                secrets = [ln.split("=", 1)[1] for ln in env_file.read_text().splitlines()
                           if ln.startswith(("POSTGRES_PASSWORD=", "REDIS_PASSWORD=", "JWT_SECRET="))]
        out, err = p.communicate(timeout=400)
    finally:
        done.set()
        t.join()
    assert p.returncode == 0, out + err
    assert seen and set(seen) == {0o600}, seen
    assert len(secrets) == 3 and all(len(s) >= 32 for s in secrets)   # JWT_SECRET: HS256 wants >= 32 bytes
    texts = [smoke_run.manifest_path.read_text(), (smoke_run.run_dir / "smoke.json").read_text(), out + err]
    for s in secrets:
        assert all(s not in t for t in texts)
