"""The run's records through the real runner and the real OpenTelemetry SDK: trace file, events, logs, tails."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from pipeline.contract.context import RunContext
from pipeline.contract.stage import StageSummary
from pipeline.core.config import Config, load_config
from pipeline.core.paths import ROOT
from pipeline.observe.recorder import read_events
from pipeline.observe.tracing import TRACE_FILE, read_trace_file
from tests.observe_support import ToolStage, run_observed


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=tmp_path / "state")


def test_the_trace_file_has_one_root_a_child_per_stage_and_tool_calls_under_their_service(cfg: Config) -> None:
    stages = [ToolStage("build"), ToolStage("scan"), ToolStage("push", skip="nothing to push")]
    run_dir = run_observed(cfg, stages, [])
    spans = read_trace_file(run_dir / TRACE_FILE)
    by_id = {s["spanId"]: s for s in spans}
    roots = [s for s in spans if not s.get("parentSpanId")]
    assert len(roots) == 1 and roots[0]["name"] == "release local"
    assert len({s["traceId"] for s in spans}) == 1
    stage_spans = [s for s in spans if s.get("parentSpanId") == roots[0]["spanId"]]
    assert sorted(s["name"] for s in stage_spans) == ["stage build", "stage push", "stage scan"]
    services = [s.name for s in cfg.services]
    service_spans = [s for s in spans if s["name"].startswith("build ")]
    assert sorted(s["name"] for s in service_spans) == sorted(f"build {n}" for n in services)
    assert all(by_id[s["parentSpanId"]]["name"] == "stage build" for s in service_spans)
    tools = [s for s in spans if s["name"] == "exec sh"]
    assert len(tools) == 2 * len(services)
    # each tool call is a child of the service span of its thread, and the subprocess saw that span's id
    assert all(by_id[t["parentSpanId"]]["name"].split()[0] in ("build", "scan") for t in tools)
    seen = {tp.split("-")[2] for st in stages for tp in st.traceparents}
    assert seen == {t["spanId"] for t in tools}
    assert all(tp.split("-")[1] == roots[0]["traceId"] for st in stages for tp in st.traceparents)
    assert all(s["endTimeUnixNano"] >= s["startTimeUnixNano"] for s in spans)


def test_events_and_logs_record_each_services_work_and_a_failure_shows_its_last_20_lines(cfg: Config) -> None:
    lines: list[str] = []
    failing = cfg.services[1].name
    run_dir = run_observed(cfg, [ToolStage("build", fail_service=failing)], lines)
    events = read_events(run_dir)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "stage_started" and kinds[-1] == "stage_finished"
    assert events[-1]["status"] == "failed"
    started = {e["service"] for e in events if e["kind"] == "service_started"}
    finished = {e["service"]: e["state"] for e in events if e["kind"] == "service_finished"}
    assert started == {s.name for s in cfg.services} and finished[failing] == "failed"
    log = run_dir / "logs" / "build" / f"{failing}.log"
    assert log.read_text().count("line") == 30
    tail_header = [i for i, ln in enumerate(lines) if ln.startswith("last 20 lines of") and str(log) in ln]
    assert len(tail_header) == 1
    shown = lines[tail_header[0] + 1: tail_header[0] + 21]
    assert shown[0] == f"  │ {failing} line 11" and shown[-1] == "  │ [failed] exited 1"
    spans = read_trace_file(run_dir / TRACE_FILE)
    bad = next(s for s in spans if s["name"] == f"build {failing}")
    assert bad["status"]["code"] == 2   # STATUS_CODE_ERROR
    json.dumps(events)


def test_a_registered_secret_never_reaches_the_trace_file_or_the_logs(cfg: Config) -> None:
    from pipeline.core.errors import StageFailed
    from pipeline.core.redact import register_secret

    secret = "s3cr3t-" + "x" * 12
    register_secret(secret)

    class Leaky(ToolStage):
        def run(self, ctx: RunContext) -> StageSummary:
            ctx.reporter.step(self.name, "svc", f"login with {secret}")
            ctx.reporter.info(f"token {secret}")
            raise StageFailed(f"push refused for {secret}")

    run_dir = run_observed(cfg, [Leaky("push")])
    for path in [run_dir / TRACE_FILE, *run_dir.rglob("*.log"), run_dir / "events.jsonl"]:
        text = path.read_text()
        assert secret not in text, path
    assert "***" in (run_dir / TRACE_FILE).read_text()


class ExcerptThenFail(ToolStage):
    """As the build does: the failing service's worker shows its failure's excerpt, then the service fails."""

    def run(self, ctx: RunContext) -> StageSummary:
        from pipeline.core.errors import StageFailed

        def work() -> None:
            ctx.reporter.step(self.name, "svc", "starting the build")
            ctx.reporter.step(self.name, "svc", "[build 6/7] RUN exit 3")
            ctx.reporter.excerpt("svc: [build 6/7] RUN exit 3 failed (full log: …)", ["exit code: 3"])

        t = threading.Thread(target=work)
        t.start()
        t.join()
        ctx.reporter.step(self.name, "svc", "exited 1", "failed")   # the main thread ends it, as build's does
        raise StageFailed("build failed for svc")


def test_a_failure_whose_stage_showed_its_excerpt_is_not_shown_again_as_the_logs_tail(cfg: Config) -> None:
    lines: list[str] = []
    run_observed(cfg, [ExcerptThenFail("build")], lines)
    assert sum(1 for ln in lines if "RUN exit 3 failed" in ln) == 1
    assert [ln for ln in lines if ln.startswith("last ")] == []
    assert "  │ exit code: 3" in lines


class Interrupting(ToolStage):
    """A stage the user stops with Ctrl-C while a piece runs (its tool has printed lines)."""

    def run(self, ctx: RunContext) -> StageSummary:
        ctx.reporter.step(self.name, "svc", "step 1 of many")
        for i in range(5):
            ctx.reporter.detail(f"svc: tool line {i}")   # the stage's log has lines: a tail could be shown
        raise KeyboardInterrupt


def test_an_interrupted_stage_shows_no_log_tail(cfg: Config) -> None:
    from pipeline.core.errors import Interrupted
    from pipeline.core.reporter import PlainReporter
    from pipeline.observe.observed import ObservedReporter
    from pipeline.release.runner import open_run, run_stages
    from tests.unit.test_runner import info

    lines: list[str] = []
    rep = ObservedReporter(PlainReporter(sink=lines.append))
    with pytest.raises(Interrupted):
        with open_run(cfg, cfg.env("local"), rep, creates_manifest=True, info=info()) as ctx:
            run_stages(ctx, [Interrupting("build")])
    assert any(ln.startswith("── build: interrupted") for ln in lines), lines
    assert [ln for ln in lines if ln.startswith("last ")] == []
