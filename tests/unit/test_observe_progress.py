"""Progress of long work: one updating live line per piece, plain lines throttled to one a minute per piece, the
cluster build's steps and heartbeats routed to its piece (no terminal needed)."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from pipeline.core.progress import EventThrottle, reporter_progress
from pipeline.core.reporter import PlainReporter
from pipeline.local.cluster.build import BUILD_PIECE, ClusterBuildProgress
from pipeline.observe.live import LiveReporter


def _screen(out: io.StringIO) -> list[str]:
    """What a terminal shows of `out`, as lines (cursor and erase codes removed)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).replace("\r", "\n").splitlines()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_lets_the_first_line_through_then_one_a_minute_per_key() -> None:
    clock = FakeClock()
    th = EventThrottle(60, clock)
    assert th.due("a") and th.due("b")
    assert not th.due("c", first=False)          # its first line starts the clock only
    clock.now += 59.9
    assert not th.due("a")
    clock.now += 0.1
    assert th.due("a") and not th.due("a")
    assert th.due("c", first=False)
    th.forget("a")
    assert th.due("a")


def test_without_a_terminal_a_long_piece_prints_its_start_one_line_a_minute_and_its_end() -> None:
    clock = FakeClock()
    lines: list[str] = []
    rep = PlainReporter(sink=lines.append, throttle=EventThrottle(60, clock))
    progress = reporter_progress(rep, "cluster")
    for second in range(0, 480, 5):          # an 8-minute build with a heartbeat every 5 s
        clock.now = 1000.0 + second
        progress(BUILD_PIECE, f"[5/6] compile: {second} s so far", "running")
    progress(BUILD_PIECE, "built in 8m00s: /cache/bin", "done")
    assert lines == [f"cluster: {BUILD_PIECE}: [5/6] compile: {s} s so far" for s in range(0, 480, 60)] + \
        [f"cluster: {BUILD_PIECE}: built in 8m00s: /cache/bin"]
    # inside a started stage (its header said it began), a service's progress shows once it has run a minute:
    # a quick push prints its end only, a large one a line a minute; a failure is always printed
    lines.clear()
    rep.stage_started("push")
    rep.step("push", "veza-docs", "1/3 layers, 1.0/4.0 MB")
    rep.step("push", "veza-docs", "pushed", "done")
    for second in range(0, 150, 1):
        clock.now = 2000.0 + second
        rep.step("push", "veza-backend-api", f"2/7 layers, {second}.0/150.0 MB")
    rep.step("push", "veza-backend-api", "unauthorized", "failed")
    assert lines[1:] == ["  veza-docs: pushed", "  veza-backend-api: 2/7 layers, 60.0/150.0 MB",
                         "  veza-backend-api: 2/7 layers, 120.0/150.0 MB", "  veza-backend-api: failed — unauthorized"]


def test_verbose_plain_output_keeps_every_step() -> None:
    lines: list[str] = []
    rep = PlainReporter(verbose=True, sink=lines.append, throttle=EventThrottle(60, FakeClock()))
    for i in range(5):
        rep.step("bases", "nats", f"Step {i}/5")
    assert len(lines) == 5


def test_the_cluster_build_reports_steps_and_heartbeats_to_its_piece_not_as_lines() -> None:
    calls: list[tuple[str, str, str]] = []
    said: list[str] = []
    prog = ClusterBuildProgress({}, said.append, lambda piece, text, state: calls.append((piece, text, state)),
                                tick_s=0.02)
    prog.start("compile")
    prog.beat("812 packages compiled")
    time.sleep(0.15)
    prog.done("compile", "900 packages compiled")
    prog.finished("built in 7m: /cache/bin")
    assert said == []
    assert {c[0] for c in calls} == {BUILD_PIECE}
    texts = [c[1] for c in calls]
    assert texts[0].startswith("[5/6] compile: compile apiserver") and "(expected ~7m00s)" in texts[0]
    beats = [t for t in texts if "expected:" in t]
    assert beats and all(re.fullmatch(r"\[5/6\] compile 0s of ~7m00s expected: 812 packages compiled", t)
                         for t in beats), beats
    assert texts[-2].startswith("[5/6] compile") and "done in" in texts[-2]
    assert calls[-1] == (BUILD_PIECE, "built in 7m: /cache/bin", "done")
    assert all(c[2] == "running" for c in calls[:-1])


def test_without_progress_the_cluster_build_says_its_lines_as_before() -> None:
    said: list[str] = []
    prog = ClusterBuildProgress({}, said.append, tick_s=60)
    prog.start("tools")
    prog.done("tools", "all present")
    prog.finished("built in 1s: /cache/bin")
    assert said[0] == "cluster build: [1/6] build tools (apt, only what is missing) (expected ~5s)"
    assert said[1].startswith("cluster build:       done in 0s (all present)")
    assert said[-1] == "cluster build: built in 1s: /cache/bin"


def test_the_live_view_shows_one_updating_line_per_piece_and_prints_only_the_result() -> None:
    out = io.StringIO()
    con = Console(file=out, force_terminal=True, width=120, height=40, color_system=None)
    rep = LiveReporter(out=con, refresh_per_second=1)
    progress = reporter_progress(rep, "cluster")
    for i in range(50):
        progress(BUILD_PIECE, f"[5/6] compile: {i} packages compiled", "running")
    progress("start", "not running; starting it", "running")
    snap = Console(file=io.StringIO(), width=120, color_system=None)
    with snap.capture() as cap:
        snap.print(rep.render())
    shown = cap.get().splitlines()
    assert len(shown) == 3 and shown[0].split()[1] == "cluster"
    assert BUILD_PIECE in shown[1] and "running" in shown[1] and "49 packages compiled" in shown[1]
    assert "s " in shown[1].split("running", 1)[1]            # its elapsed time, e.g. "0.0s"
    progress(BUILD_PIECE, "built in 8m: /cache/bin", "done")
    progress("start", "ready in 14.1s — kubeconfig: /k", "done")
    rep.run_closed("ok")
    printed = [ln for ln in _screen(out) if "cluster:" in ln]
    assert any(ln.startswith(f"✓ cluster: {BUILD_PIECE} — built in 8m: /cache/bin (") for ln in printed), printed
    assert any(ln.startswith("✓ cluster: start — ready in 14.1s — kubeconfig: /k (") for ln in printed), printed
    assert not any("packages compiled" in ln for ln in _screen(out) if ln.startswith("✓"))

    out3 = io.StringIO()
    rep3 = LiveReporter(out=Console(file=out3, force_terminal=True, width=120, height=40, color_system=None))
    for i in range(6):
        reporter_progress(rep3, "bases")(f"base{i}", "building", "running")
    for i in range(6):
        reporter_progress(rep3, "bases")(f"base{i}", "boom" if i == 5 else "built", "failed" if i == 5 else "done")
    rep3.run_closed("ok")
    results = [ln for ln in _screen(out3) if ln.lstrip().startswith(("✓", "✗"))]
    assert results == ["  ✗ bases base5: boom", "✗ bases: 5 done, 1 failed (0.0s)"], results

    out2 = io.StringIO()
    rep2 = LiveReporter(out=Console(file=out2, force_terminal=True, width=120, height=40, color_system=None))
    reporter_progress(rep2, "bases")("nats", "Step 2/5 : RUN apt-get install nats-server", "running")
    reporter_progress(rep2, "bases")("nats", "built veza-i20b/nats:x from recipe nats in 20.1s", "done")
    rep2.run_closed("ok")
    assert any(ln.startswith("✓ bases: nats — built veza-i20b/nats:x from recipe nats in 20.1s (")
               for ln in _screen(out2)), _screen(out2)
