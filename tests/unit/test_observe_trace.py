"""The run's records through the real runner and the real OpenTelemetry SDK: trace file, events, logs, tails."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.errors import StageFailed
from pipeline.core.paths import ROOT
from pipeline.core.reporter import PlainReporter
from pipeline.observe.observed import ObservedReporter
from pipeline.observe.recorder import read_events
from pipeline.observe.tracing import TRACE_FILE, read_trace_file
from pipeline.release.runner import open_run, run_stages
from pipeline.release.stage import RunContext, StageSummary
from pipeline.tools import proc
from tests.unit.test_runner import info


class ToolStage:
    """A stage that works per service in worker threads, as build and push do, and calls a real tool."""

    def __init__(self, name: str, *, fail_service: str = "", skip: str | None = None) -> None:
        self.name, self.fail_service, self._skip = name, fail_service, skip
        self.traceparents: list[str] = []

    def skip(self, ctx: RunContext) -> str | None:
        return self._skip

    def preflight(self, ctx: RunContext) -> None:
        pass

    def holds(self, ctx: RunContext) -> str | None:
        return None

    def run(self, ctx: RunContext) -> StageSummary:
        def work(service: str) -> None:
            for i in range(30):
                ctx.reporter.step(self.name, service, f"{service} line {i}")
            out = proc.run(["sh", "-c", 'echo "$TRACEPARENT"'], timeout=10).stdout.strip()
            self.traceparents.append(out)
            failed = service == self.fail_service
            ctx.reporter.step(self.name, service, "exited 1" if failed else "done in 0.1s",
                              "failed" if failed else "done")

        threads = [threading.Thread(target=work, args=(s,)) for s in ctx.selected()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.fail_service:
            raise StageFailed(f"{self.name}: {self.fail_service} failed")
        return StageSummary(f"{len(threads)} done")


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=tmp_path / "state")


def _run(cfg: Config, stages: list[ToolStage], lines: list[str]) -> Path:
    rep = ObservedReporter(PlainReporter(sink=lines.append))
    run_dir: Path | None = None
    try:
        with open_run(cfg, cfg.env("local"), rep, creates_manifest=True, info=info()) as ctx:
            run_dir = ctx.run_dir
            run_stages(ctx, stages)
    except StageFailed:
        pass
    assert run_dir is not None
    return run_dir


def test_the_trace_file_has_one_root_a_child_per_stage_and_tool_calls_under_their_service(cfg: Config) -> None:
    stages = [ToolStage("build"), ToolStage("scan"), ToolStage("push", skip="nothing to push")]
    run_dir = _run(cfg, stages, [])
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
    run_dir = _run(cfg, [ToolStage("build", fail_service=failing)], lines)
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
