"""OpenTelemetry traces of a run: a root span for the run, a child per stage, per service's work, per tool call.

Built on the OpenTelemetry SDK (opentelemetry-sdk, pinned in pyproject.toml). Every run writes its spans to
`<run dir>/trace.otlp.jsonl`: OTLP JSON (the OTLP/HTTP JSON encoding of ExportTraceServiceRequest, one request
per line, trace and span ids as hex, as the OpenTelemetry Collector's file exporter writes them). When
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, the same spans also go to that
endpoint through the SDK's OTLP/HTTP exporter (protobuf, `<endpoint>/v1/traces`, 5 s timeout).

Tool calls (pipeline.tools.proc) ask `tool_span(argv)` for a span and get the W3C `traceparent` of it, which
proc passes to the subprocess as TRACEPARENT (W3C Trace Context, https://www.w3.org/TR/trace-context/).
A TRACEPARENT in this process's environment (a CI job's own trace) becomes the parent of the run span.

Span attributes carry names, states and one-line details (redacted), never argv or environment values; the
trace file is redacted again as it is written. The SDK is imported only when a run opens: `invoke --list`
and the tasks without a run stay fast.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.redact import redact

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.trace import Span

TRACE_FILE = "trace.otlp.jsonl"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_SUBCOMMAND = re.compile(r"[a-z][a-z0-9-]{0,30}")


def _hex_ids(node: Any) -> Any:
    """OTLP JSON carries trace/span ids as hex strings (protobuf's JSON mapping would give base64)."""
    if isinstance(node, dict):
        return {k: (base64.b64decode(v).hex() if k in _ID_FIELDS and isinstance(v, str) else _hex_ids(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The spans as one OTLP JSON ExportTraceServiceRequest (resourceSpans → scopeSpans → spans)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return _hex_ids(MessageToDict(encode_spans(spans), use_integers_for_enums=True))  # type: ignore[no-any-return]


def read_trace_file(path: Path) -> list[dict[str, Any]]:
    """Every span of an OTLP JSON lines file, flattened: OTLP span dicts (traceId, spanId, parentSpanId, name…)."""
    spans: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for rs in json.loads(line).get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                spans.extend(ss.get("spans", []))
    return spans


def _file_exporter(path: Path) -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class OtlpJsonFileExporter(SpanExporter):
        """Appends each exported batch as one OTLP JSON line (thread-safe)."""

        def __init__(self) -> None:
            self._lock = threading.Lock()

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            line = redact(json.dumps(otlp_json(spans), separators=(",", ":")))
            with self._lock, path.open("a") as fh:
                fh.write(line + "\n")
            return SpanExportResult.SUCCESS

    return OtlpJsonFileExporter()


def _counting(inner: Any, owner: RunTrace) -> Any:
    """A SpanExporter that delegates to `inner` and counts failed exports on `owner`."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            result = inner.export(spans)
            if result != SpanExportResult.SUCCESS:
                owner.export_failures += 1
            return result  # type: ignore[no-any-return]

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(inner.force_flush(timeout_millis))

    return CountingExporter()


def otlp_endpoint_configured(environ: dict[str, str] | None = None) -> bool:
    """True when the standard OTLP exporter variables name an endpoint."""
    e = os.environ if environ is None else environ
    return bool(e.get("OTEL_EXPORTER_OTLP_ENDPOINT") or e.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class RunTrace:
    """The spans of one run. Thread-safe: builds and pushes report from worker threads.

    run_dir: where the trace file goes; run_id/env: resource attributes (veza.run_id, deployment.environment).
    """

    def __init__(self, run_dir: Path, run_id: str, env: str) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.path = run_dir / TRACE_FILE
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        resource = Resource.create({"service.name": "veza-pipeline", "veza.run_id": run_id,
                                    "deployment.environment": env})
        self.provider: TracerProvider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(_file_exporter(self.path)))
        self.export_failures = 0
        if otlp_endpoint_configured():
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # The exporter logs each retry; the run says it once instead (export_error()).
            logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
            self.provider.add_span_processor(BatchSpanProcessor(_counting(OTLPSpanExporter(timeout=5), self)))
        self.tracer = self.provider.get_tracer("veza-pipeline")
        incoming = self._propagator.extract({"traceparent": os.environ["TRACEPARENT"]}) \
            if os.environ.get("TRACEPARENT") else None
        self.root: Span = self.tracer.start_span(f"release {env}" if env else "run", context=incoming,
                                                 attributes={"veza.run_id": run_id, "veza.env": env})
        self._lock = threading.Lock()
        self._stages: dict[str, Span] = {}
        self._services: dict[tuple[str, str], Span] = {}
        self._thread_parent: dict[int, Span] = {}

    # -- spans driven by the reporter's events ------------------------------------------------------------
    def stage_started(self, stage: str, at_ns: int | None = None) -> None:
        ctx = self._trace.set_span_in_context(self.root)
        span = self.tracer.start_span(f"stage {stage}", context=ctx, start_time=at_ns,
                                      attributes={"veza.stage": stage})
        with self._lock:
            self._stages[stage] = span

    def stage_finished(self, stage: str, status: str, detail: str = "", at_ns: int | None = None) -> None:
        with self._lock:
            span = self._stages.pop(stage, None)
            open_services = [k for k in self._services if k[0] == stage]
        if span is None:   # skipped or resumed: no stage_started, a span of its own all the same
            self.stage_started(stage, at_ns)
            with self._lock:
                span = self._stages.pop(stage)
        for key in open_services:
            self.service_finished(key[0], key[1], status)
        span.set_attribute("veza.status", status)
        if detail:
            span.set_attribute("veza.detail", redact(detail)[:500])
        self._set_status(span, status)
        span.end()

    def service_started(self, stage: str, service: str, at_ns: int | None = None) -> None:
        with self._lock:
            if (stage, service) in self._services:
                return
            parent = self._stages.get(stage, self.root)
        span = self.tracer.start_span(f"{stage} {service}", context=self._trace.set_span_in_context(parent),
                                      start_time=at_ns, attributes={"veza.stage": stage, "veza.service": service})
        with self._lock:
            self._services[(stage, service)] = span
            self._thread_parent[threading.get_ident()] = span

    def service_finished(self, stage: str, service: str, state: str) -> None:
        with self._lock:
            span = self._services.pop((stage, service), None)
            for tid, s in list(self._thread_parent.items()):
                if s is span:
                    del self._thread_parent[tid]
        if span is None:
            return
        span.set_attribute("veza.state", state)
        self._set_status(span, state)
        span.end()

    def _set_status(self, span: Span, status: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        if status in ("failed", "blocked", "interrupted"):
            span.set_status(Status(StatusCode.ERROR, status))

    # -- tool calls -----------------------------------------------------------------------------------------
    def _parent(self) -> Span:
        current = self._trace.get_current_span()
        if current.get_span_context().is_valid:
            return current
        with self._lock:
            by_thread = self._thread_parent.get(threading.get_ident())
            if by_thread is not None:
                return by_thread
            stages = list(self._stages.values())
        return stages[-1] if stages else self.root

    @contextmanager
    def tool_span(self, argv: Sequence[str]) -> Iterator[tuple[str, Span]]:
        """A span for one external tool call; yields (traceparent, span) — the caller sets process.exit.code."""
        name = os.path.basename(argv[0]) if argv else "tool"
        sub = next((a for a in argv[1:] if not a.startswith("-")), "")   # docker *build*, helm *upgrade*
        span = self.tracer.start_span(f"exec {name}{f' {sub}' if _SUBCOMMAND.fullmatch(sub) else ''}",
                                      context=self._trace.set_span_in_context(self._parent()),
                                      attributes={"process.executable.name": name})
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        with self.ending(span):
            yield carrier.get("traceparent", ""), span

    @contextmanager
    def ending(self, span: Span) -> Iterator[None]:
        """Ends `span` after the block; an exception marks it failed and goes on."""
        try:
            yield
        except BaseException as exc:
            # the error's type only: its message may quote a command line (the run's logs keep it, redacted)
            span.set_attribute("error.type", type(exc).__name__)
            self._set_status(span, "failed")
            raise
        finally:
            span.end()

    def export_error(self) -> str:
        """"" when every batch reached the OTLP endpoint (or none is configured), else one line saying so."""
        if not self.export_failures:
            return ""
        where = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return (f"trace not exported to {where} ({self.export_failures} batch(es) failed); "
                f"the trace file has every span: {self.path}")

    def close(self, status: str) -> None:
        """End what is still open, then the root span; flush the file and the OTLP export (bounded waits)."""
        with self._lock:
            services, stages = list(self._services), list(self._stages)
        for stage, service in services:
            self.service_finished(stage, service, "interrupted" if status != "ok" else "done")
        for stage in stages:
            self.stage_finished(stage, "interrupted" if status != "ok" else "ok")
        self.root.set_attribute("veza.status", status)
        self._set_status(self.root, status)
        self.root.end()
        self.provider.force_flush(timeout_millis=10_000)
        self.provider.shutdown()


_active: RunTrace | None = None
_active_lock = threading.Lock()


def activate(trace: RunTrace | None) -> None:
    """Make `trace` the one tool calls report to (None: no run is open)."""
    global _active
    with _active_lock:
        _active = trace


@contextmanager
def call_span(name: str, **attributes: str) -> Iterator[Any]:
    """A span for an external call that is not a subprocess (an engine API push, a registry request); yields
    the span, or None when no run is traced. `name` like "engine push"; attributes must hold no secret."""
    current = _active
    if current is None:
        yield None
        return
    span = current.tracer.start_span(name, context=current._trace.set_span_in_context(current._parent()),
                                     attributes={k: redact(v) for k, v in attributes.items()})
    with current.ending(span):
        yield span


@contextmanager
def tool_span(argv: Sequence[str]) -> Iterator[tuple[str, Any]]:
    """proc's hook: (traceparent, span) of a new tool-call span, or ("", None) when no run is traced."""
    current = _active
    if current is None:
        yield "", None
        return
    with current.tool_span(argv) as got:
        yield got
