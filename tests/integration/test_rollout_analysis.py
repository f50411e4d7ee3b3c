"""A rollout step judged end to end (pipeline/stages/deploy/analysis.py) against a real Prometheus: Debian's
prometheus 2.42 (the veza-local/prometheus base image) scrapes, every second, pairs of small loopback HTTP servers,
a "stable" and a "canary" track per scenario, that count their requests and latencies exactly as the Veza services'
kit does (http_requests_total{method,route,code}, http_request_duration_seconds_bucket{route,le}, /metrics counted
too); the scrape configuration adds namespace/service/track as target labels, as the pod relabelling does. The
pipeline's own load loop (stages/deploy/load.py) sends the traffic; the default metric templates judge it.

Windows are short (scrape 1 s, window 4 s, interval 2 s) so the file takes about a minute.
"""

from __future__ import annotations

import dataclasses
import http.server
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.core.config_rollout import DEFAULT_METRICS, Load, MetricRule, Rollout, Step
from pipeline.release.html_report import render_report
from pipeline.stages.deploy.analysis import ABORT, PROMOTE_STEP, StepResult, SystemClock, Target, run_step
from pipeline.stages.deploy.load import LoadLoop
from pipeline.tools import prometheus
from tests.integration.prometheus_support import running_prometheus
from tests.integration.test_html_report_chromium import chromium, png_pixels
from tests.ports import PortPool

pytestmark = pytest.mark.engine
free_port = PortPool(range(21400, 21500)).take

NAMESPACE = "veza-analysis-it"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)   # the kit's (services/*/kit/kit.go)
ERROR_RATIO, P95 = DEFAULT_METRICS
ROLLOUT = Rollout(strategy="canary", steps=(Step(25, 6),), interval_s=2, window="4s", min_requests=8,
                  metrics=DEFAULT_METRICS, load=Load(rps=10, max_requests=1000))


@dataclass
class Track:
    """How one version behaves: every `error_every`-th request to /health answers 500 (0: none), each takes
    `latency_s`; `histogram`: whether it exports the latency histogram at all."""
    error_every: int = 0
    latency_s: float = 0.0
    histogram: bool = True
    port: int = 0
    served: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    buckets: dict[str, list[int]] = field(default_factory=dict)
    sums: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, route: str, code: int, seconds: float) -> None:
        with self.lock:
            self.served["GET", route, code] += 1
            counts = self.buckets.setdefault(route, [0] * (len(BUCKETS) + 1))
            for i, le in enumerate((*BUCKETS, float("inf"))):
                counts[i] += seconds <= le
            self.sums[route] += seconds

    def exposition(self) -> str:
        """The kit's Render(), for what this track has served."""
        with self.lock:
            lines = ["# TYPE http_requests_total counter"]
            lines += [f'http_requests_total{{method="{m}",route="{r}",code="{c}"}} {n}'
                      for (m, r, c), n in sorted(self.served.items())]
            if self.histogram:
                lines.append("# TYPE http_request_duration_seconds histogram")
                for route, counts in sorted(self.buckets.items()):
                    lines += [f'http_request_duration_seconds_bucket{{route="{route}",le="{le:g}"}} {n}'
                              for le, n in zip(BUCKETS, counts, strict=False)]
                    lines.append(f'http_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {counts[-1]}')
                    lines.append(f'http_request_duration_seconds_sum{{route="{route}"}} {self.sums[route]:.6f}')
                    lines.append(f'http_request_duration_seconds_count{{route="{route}"}} {counts[-1]}')
            return "\n".join(lines) + "\n"


SCENARIOS: dict[str, dict[str, Track]] = {
    "errors": {"stable": Track(), "canary": Track(error_every=5)},                  # 500 on 20%
    "good": {"stable": Track(), "canary": Track()},
    "slow": {"stable": Track(), "canary": Track(latency_s=0.15)},                   # p95 from ~5 ms to ~240 ms
    "no-histogram": {"stable": Track(), "canary": Track(histogram=False)},
    "baseline": {"stable": Track(), "canary": Track(error_every=25)},               # 4%: under max 0.1
}


def _serve(track: Track) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            started = time.monotonic()
            route = self.path if self.path in ("/health", "/metrics") else "other"
            code = 404
            if route == "/metrics":
                body, code = track.exposition().encode(), 200
            elif route == "/health":
                with track.lock:
                    n = sum(v for (_, r, _c), v in track.served.items() if r == "/health") + 1
                code = 500 if track.error_every and n % track.error_every == 0 else 200
                time.sleep(track.latency_s)
                body = b'{"status":"ok"}'
            else:
                body = b"not found"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            track.observe(route, code, time.monotonic() - started)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", track.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    servers = []
    jobs = []
    for service, tracks in SCENARIOS.items():
        for name, track in tracks.items():
            track.port = free_port()
            servers.append(_serve(track))
            jobs.append(f"      - targets: ['127.0.0.1:{track.port}']\n"
                        f"        labels: {{namespace: {NAMESPACE}, service: {service}, track: {name}}}\n")
    scrape = ("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
              "scrape_configs:\n  - job_name: veza\n    static_configs:\n" + "".join(jobs))
    try:
        with running_prometheus(scrape, tmp_path_factory.mktemp("prometheus"), free_port()) as url:
            deadline = time.monotonic() + 30
            while (prometheus.single_value(prometheus.query(url, "sum(up)")) or 0) < len(servers):
                assert time.monotonic() < deadline, "Prometheus did not scrape every track within 30 s"
                time.sleep(0.5)
            yield url
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _step(url: str, service: str, rollout: Rollout = ROLLOUT, *, canary_load: bool = True,
          **kw: float) -> StepResult:
    """The step judged while the load loop sends traffic to both tracks of `service` (as the deploy will)."""
    tracks = SCENARIOS[service]
    target = Target(service=service, namespace=NAMESPACE, release="veza")
    to_canary = f"http://127.0.0.1:{tracks['canary' if canary_load else 'stable'].port}"
    with LoadLoop(f"http://127.0.0.1:{tracks['stable'].port}", rollout.load), LoadLoop(to_canary, rollout.load):
        return run_step(rollout, target, rollout.steps[0], 1, prometheus.Client(url), SystemClock(), **kw)


def test_a_canary_answering_500_on_a_fifth_is_aborted_within_two_intervals(prometheus_url: str,
                                                                         tmp_path: Path) -> None:
    """...and the report shows it: in Debian's Chromium, a chart per metric with the two failed values in red."""
    started = time.monotonic()
    result = _step(prometheus_url, "errors", dataclasses.replace(ROLLOUT, failure_limit=1))
    assert result.decision == ABORT and len(result.intervals) == 2, result.as_dict()
    assert "2 failed interval(s), above failure_limit 1: error-ratio " in result.reason
    assert "> max 0.05 (stable 0)" in result.reason
    canary = [p.canary for p in result.series()["error-ratio"]]
    assert all(c is not None and 0.1 < c < 0.3 for c in canary), canary
    assert time.monotonic() - started < 4 + 2 * 2 + 2     # settle (the window), two intervals, slack

    html = tmp_path / "report.html"
    html.write_text(render_report({"run_id": "r", "release_id": "staging-x", "env": "staging", "status": "failed",
                                   "rollout": {"strategy": "canary", "steps": [result.as_dict()]}}, [], tmp_path))
    dom = chromium(tmp_path, "--dump-dom", html.as_uri()).stdout
    charts = re.findall(r'<svg class="analysis" data-step="1" data-metric="([^"]+)"', dom)
    assert charts == ["error-ratio", "p95-latency"], charts
    error_chart = dom[dom.index('data-metric="error-ratio"'):dom.index('data-metric="p95-latency"')]
    assert re.findall(r'<circle class="point canary" data-verdict="(\w+)"', error_chart) == ["fail", "fail"]
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,800", "--hide-scrollbars", html.as_uri())
    _, _, bpp, rows = png_pixels(shot)
    colors = {row[i:i + 3] for row in rows for i in range(0, len(row), bpp)}
    # the red of the threshold line and of the failed values is on screen
    assert any(abs(c[0] - 0xD6) < 12 and abs(c[1] - 0x45) < 12 and abs(c[2] - 0x45) < 12 for c in colors)


def test_a_good_canary_passes_the_step(prometheus_url: str) -> None:
    result = _step(prometheus_url, "good")
    assert result.decision == PROMOTE_STEP, result.as_dict()
    assert result.reason == "step 1 (weight 25%): 3 interval(s) judged, 0 failed (failure_limit 0)"
    assert all(i.requests is not None and i.requests >= ROLLOUT.min_requests for i in result.intervals)
    assert [len(s) for s in result.series().values()] == [3, 3]


def test_a_canary_nobody_calls_is_inconclusive_not_judged_on_its_scrapes(prometheus_url: str) -> None:
    """Prometheus's own GETs of /metrics are requests the service counts; they are not traffic to judge."""
    result = _step(prometheus_url, "good", canary_load=False)
    assert result.decision == ABORT and result.intervals[0].outcome == "inconclusive", result.as_dict()
    assert "the new version saw 0 requests, fewer than min_requests 8 (inconclusive policy: abort)" in result.reason


def test_a_latency_regression_is_caught_by_the_p95_rule(prometheus_url: str) -> None:
    rollout = dataclasses.replace(ROLLOUT, metrics=(dataclasses.replace(P95, max=0.1),))
    result = _step(prometheus_url, "slow", rollout)
    assert result.decision == ABORT and "p95-latency " in result.reason and "> max 0.1" in result.reason
    point = result.series()["p95-latency"][0]
    assert point.canary is not None and point.canary > 0.1 and point.baseline is not None
    assert point.baseline < 0.025 and "stable" in result.reason


@pytest.mark.parametrize(("policy", "decision", "said"), [
    ("abort", ABORT, "p95-latency: no sample for the new version (no-data policy: abort)"),
    ("fail", ABORT, "2 failed interval(s), above failure_limit 1: p95-latency: no sample for the new version "
                    "(no-data policy: fail)"),
    ("pass", PROMOTE_STEP, "passed only by policy (no-data policy: pass)"),
])
def test_no_data_is_handled_as_configured(prometheus_url: str, policy: str, decision: str, said: str) -> None:
    """The canary counts its requests but exports no latency histogram: the p95 query returns no sample."""
    result = _step(prometheus_url, "no-histogram",
                   dataclasses.replace(ROLLOUT, no_data=policy, failure_limit=1, steps=(Step(25, 4),)))
    assert result.decision == decision and said in result.reason, result.as_dict()
    assert {i.outcome for i in result.intervals} == {"no-data"}
    assert all(p.canary is not None for p in result.series()["error-ratio"])   # the counters were there


def test_a_canary_worse_than_the_baseline_fails_while_its_absolute_threshold_passes(prometheus_url: str) -> None:
    rule = dataclasses.replace(ERROR_RATIO, max=0.1, baseline_margin=0.01)
    result = _step(prometheus_url, "baseline", dataclasses.replace(ROLLOUT, metrics=(rule,)))
    assert result.decision == ABORT and "(stable 0 × 1 + 0.01)" in result.reason, result.as_dict()
    point = result.series()["error-ratio"][0]
    assert point.canary is not None and 0.01 < point.canary < 0.1 and point.threshold == pytest.approx(0.01)


def test_a_refused_query_and_a_stopped_prometheus_abort_with_the_reason(prometheus_url: str) -> None:
    broken = MetricRule(name="broken", query='sum(rate(http_requests_total{track="$track"}[$window])')
    broken = dataclasses.replace(broken, max=1.0)
    result = _step(prometheus_url, "good", dataclasses.replace(ROLLOUT, metrics=(broken,)), settle_s=0)
    assert result.decision == ABORT and "query-error on broken (canary): Prometheus refused the query (400" in \
        result.reason and "(query_error policy: abort)" in result.reason
    dead = f"http://127.0.0.1:{free_port()}"
    target = Target(service="good", namespace=NAMESPACE, release="veza")
    result = run_step(ROLLOUT, target, ROLLOUT.steps[0], 1, prometheus.Client(dead, timeout_s=2), SystemClock(),
                      settle_s=0)
    assert result.decision == ABORT and f"query-error on the request count (requests): Prometheus at {dead} " \
        "did not answer" in result.reason
