"""The live view's choice and rendering (rich, no terminal needed) and `invoke report`."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from rich.console import Console

from pipeline.core.config import load_config
from pipeline.core.paths import ROOT
from pipeline.observe.live import LiveReporter
from pipeline.observe.reporters import wants_live_view
from tests.observe_support import ToolStage, run_observed


def test_the_live_view_only_on_a_terminal_outside_ci() -> None:
    assert wants_live_view(True, {"TERM": "xterm"})
    assert wants_live_view(True, {"CI": "false"})
    assert not wants_live_view(False, {})
    assert not wants_live_view(True, {"CI": "true"})
    assert not wants_live_view(True, {"CI": "1"})
    assert not wants_live_view(True, {"TERM": "dumb"})


def _live(height: int = 30) -> tuple[LiveReporter, io.StringIO]:
    out = io.StringIO()
    con = Console(file=out, force_terminal=True, width=100, height=height, color_system=None)
    return LiveReporter(out=con, refresh_per_second=1), out


def test_one_line_per_service_with_its_state_and_current_step_cut_to_the_screen() -> None:
    rep, _ = _live(height=6)
    rep.stage_started("build")
    for i in range(8):
        rep.step("build", f"svc-{i}", f"Step 3/9 : RUN make {i}")
    rep.step("build", "svc-0", "built in 1.0s", "done")
    con = Console(file=io.StringIO(), width=100, color_system=None)
    with con.capture() as cap:
        con.print(rep.render())
    text = cap.get().splitlines()
    assert text[0].split()[1] == "build"
    assert "svc-0" in text[1] and "done" in text[1]
    assert "svc-1" in text[2] and "running" in text[2] and "RUN make 1" in text[2]
    assert len(text) <= 4 and text[-1].strip().startswith("…") and "more" in text[-1]
    rep.run_closed("ok")


def test_resumed_stages_share_one_line_and_a_finished_stage_is_one_line() -> None:
    rep, out = _live()
    for s in ("build", "scan"):
        rep.stage_finished(s, "resumed", "recorded earlier; checked: still holds")
    rep.stage_started("push")
    rep.step("push", "svc", "pushing layer 3/7")
    rep.step("push", "svc", "pushed", "done")
    rep.stage_finished("push", "ok", "1 pushed")
    rep.run_closed("ok")
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip() and "svc" not in ln]
    assert any("build, scan: resumed" in ln for ln in lines)
    assert any("push ok" in ln and "1 pushed" in ln for ln in lines)
    assert "pushing layer" not in "".join(lines)


def test_invoke_report_prints_the_latest_report_and_refuses_when_there_is_none(tmp_path: Path) -> None:
    cfg = dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=tmp_path / "state")
    env = {**os.environ, "VEZA_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    invoke = [sys.executable, "-m", "invoke", "report"]
    cp = subprocess.run(invoke, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert cp.returncode == 2 and cp.stderr.startswith("error: environment local has no HTML run report yet")
    run_dir = run_observed(cfg, [ToolStage("build")], report=True)
    cp = subprocess.run(invoke, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert cp.returncode == 0 and cp.stdout.strip() == str(run_dir / "report.html")
    cp = subprocess.run([*invoke, "--history"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert cp.stdout.strip() == str(run_dir.parent / "index.html")


def test_push_progress_sums_the_engines_layer_bytes() -> None:
    from pipeline.tools.docker_push import _LayerProgress

    seen: list[str] = []
    prog = _LayerProgress(seen.append)
    prog.update({"status": "Preparing", "id": "a"})
    prog.update({"status": "Pushing", "id": "a", "progressDetail": {"current": 1_000_000, "total": 4_000_000}})
    prog.update({"status": "Layer already exists", "id": "b"})
    prog.last = 0.0
    prog.update({"status": "Pushing", "id": "c", "progressDetail": {"current": 500_000, "total": 2_000_000}})
    assert seen[0] == "0/1 layers, 1.0/4.0 MB"
    assert seen[-1] == "1/3 layers, 1.5/6.0 MB"
    assert len(seen) == 2   # throttled: one line per second


def test_in_the_live_view_a_failing_service_shows_its_last_20_lines_and_the_path(tmp_path: Path) -> None:
    cfg = dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=tmp_path / "state")
    rep, out = _live()
    failing = cfg.services[0].name
    run_dir = run_observed(cfg, [ToolStage("build", fail_service=failing)], display=rep)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).replace("\r", "\n")   # the terminal's view
    log = run_dir / "logs" / "build" / f"{failing}.log"
    assert f"last 20 lines of {log}:" in text
    shown = [ln for ln in text.splitlines() if ln.startswith("  │ ")]
    assert shown[0] == f"  │ {failing} line 11" and shown[-1] == "  │ [failed] exited 1" and len(shown) == 20
    assert "✗ build failed" in text


def test_a_step_that_ends_the_live_region_while_it_redraws_never_deadlocks() -> None:
    # rich's refresh thread holds the Live's lock while it asks for the region; a step that finishes long work
    # (bases, the cluster build) holds ours and stops the Live. The run of the tmux test's driver hung that way.
    out = io.StringIO()
    rep = LiveReporter(out=Console(file=out, force_terminal=True, width=100, height=30), refresh_per_second=1000)

    def steps() -> None:
        for i in range(400):
            rep.step("bases", "probe", f"probe step {i}")
            rep.step("bases", "probe", "built", "done")      # the group's last piece: the Live stops

    worker = threading.Thread(target=steps, daemon=True)
    worker.start()
    worker.join(20)
    alive = worker.is_alive()
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__   # a deadlocked Live still redirects them
    assert not alive, "the reporter and rich's refresh thread wait for each other"
    assert out.getvalue().count("bases: probe — built") == 400


def test_long_work_stopped_by_ctrl_c_ends_with_an_interrupted_line_not_a_done_one() -> None:
    for n in (2, 5):
        rep, out = _live()
        names = [f"base-{i}" for i in range(n)]
        for name in names:
            rep.step("bases", name, "Unpacking libicu72 …")
        for name in names:
            rep.step("bases", name, "stopped (Ctrl-C)", "interrupted")
        rep.run_closed("interrupted")
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
        lines = [ln for ln in plain.splitlines() if "bases:" in ln]   # the permanent lines, not the region
        assert lines, out.getvalue()
        assert all(ln.lstrip().startswith("■") for ln in lines), lines
        assert not any("done" in ln for ln in lines), lines


def test_every_line_of_the_region_leaves_room_for_the_terminals_ctrl_c_echo() -> None:
    """A full-width last line wraps when the terminal echoes "^C" after it: rich then erases one line too few."""
    from rich.cells import cell_len

    from pipeline.observe.live import ECHO_ROOM

    for width in (30, 60, 100, 120):
        out = io.StringIO()
        con = Console(file=out, force_terminal=True, width=width, height=40, color_system=None)
        rep = LiveReporter(out=con, refresh_per_second=1)
        rep.stage_started("build")
        rep.info("building 4 image(s) with 2 worker(s): " + "x" * 300)
        for i in range(3):
            rep.step("build", f"veza-service-{i}", "[build 6/6] RUN --mount=type=cache " + "y" * 300)
        lines = [seg_line for seg_line in con.render_lines(rep.render(), con.options, pad=False)]
        widths = [sum(cell_len(s.text) for s in ln) for ln in lines]
        assert len(lines) == 5 and max(widths) <= width - ECHO_ROOM, (width, widths)
        rep.run_closed("ok")
