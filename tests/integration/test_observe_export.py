"""Exports that leave the machine's files: OTLP/HTTP to a loopback receiver, metrics to a real Pushgateway
(Debian's prometheus-pushgateway), both started here on 127.0.0.1:19500-19599 and stopped at the end."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pipeline.core.config import Config, load_config
from pipeline.core.paths import ROOT
from pipeline.observe.metrics import StageTiming, push_run_metrics, run_registry
from pipeline.observe.tracing import TRACE_FILE, read_trace_file
from tests.observe_support import ToolStage, run_observed
from tests.ports import PortPool

pytestmark = pytest.mark.slow
PORTS = PortPool(range(19500, 19600))


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=tmp_path / "state")


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver (protobuf): keeps every span it is sent."""

    received: list[tuple[str, str, bytes]] = []   # (path, content type, span id) per span

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.received.append((self.path, self.headers.get("Content-Type", ""), span.span_id))
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    port = PORTS.take()
    got: list[tuple[str, str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"received": got})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", got
    finally:
        server.shutdown()
        server.server_close()


def test_the_otlp_endpoint_receives_the_same_spans_as_the_trace_file(
        cfg: Config, otlp_receiver: tuple[str, list[tuple[str, str, bytes]]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, got = otlp_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    run_dir = run_observed(cfg, [ToolStage("build"), ToolStage("push")])
    in_file = {s["spanId"] for s in read_trace_file(run_dir / TRACE_FILE)}
    assert len(in_file) == 1 + 2 + 2 * 4 * 2          # run, stages, services, tool calls
    assert {span_id.hex() for _, _, span_id in got} == in_file
    assert {(path, ctype) for path, ctype, _ in got} == {("/v1/traces", "application/x-protobuf")}


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("prometheus-pushgateway")
    if exe is None:
        pytest.fail("Debian's prometheus-pushgateway is missing; run: python3 -m pipeline.machine.bootstrap --tests")
    port = PORTS.take()
    log = (tmp_path / "pushgateway.log").open("w")
    proc = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"the pushgateway did not start: {(tmp_path / 'pushgateway.log').read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_run_metrics_reach_a_real_pushgateway(pushgateway: str) -> None:
    reg = run_registry("r1", "ok", 12.5, [StageTiming("build", "ok", 10.25), StageTiming("push", "resumed", 0.5)],
                       cache_hits=3, retries=2)
    assert push_run_metrics(pushgateway, "staging", reg) == ""
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as r:
        text = r.read().decode()
    mine = [ln for ln in text.splitlines() if ln.startswith("veza_pipeline_") and 'env="staging"' in ln]
    assert any('stage="build"' in ln and 'status="ok"' in ln and ln.endswith(" 10.25") for ln in mine), mine
    assert any(ln.startswith("veza_pipeline_cache_hits{") and ln.endswith(" 3") for ln in mine), mine
    assert any(ln.startswith("veza_pipeline_retries{") and ln.endswith(" 2") for ln in mine), mine
    assert any(ln.startswith("veza_pipeline_run_success{") and ln.endswith(" 1") for ln in mine), mine


def test_an_unreachable_pushgateway_is_one_line_not_a_failure() -> None:
    port = PORTS.take()   # nothing listens there
    reg = run_registry("r1", "failed", 1.0, [], cache_hits=0, retries=0)
    error = push_run_metrics(f"http://127.0.0.1:{port}", "local", reg, timeout_s=2)
    assert error.startswith(f"metrics not pushed to http://127.0.0.1:{port}:") and "\n" not in error


def test_an_unreachable_otlp_endpoint_is_one_warning_and_the_trace_file_is_whole(
        cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    port = PORTS.take()   # nothing listens there
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    lines: list[str] = []
    run_dir = run_observed(cfg, [ToolStage("build")], lines)
    warnings = [ln for ln in lines if ln.startswith("warning: trace not exported")]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0] and str(run_dir) in warnings[0]
    assert len(read_trace_file(run_dir / TRACE_FILE)) == 1 + 1 + 4 * 2
