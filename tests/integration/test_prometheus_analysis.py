"""The rollout analysis against a real Prometheus: the Debian-built image (`invoke bases`: veza-local/prometheus)
scrapes a loopback exporter that serves the Veza services' own metric names (http_requests_total,
http_request_duration_seconds) for a stable and a canary track; the templates are rendered, queried through
pipeline/tools/prometheus.py and judged by pipeline/gate/analysis.py.

The canary answers 500 on 20% of its requests and is slower; the stable version is clean. Prometheus runs on
the host network, bound to 127.0.0.1, with a 1 s scrape interval; the container is removed afterwards.
"""

from __future__ import annotations

import dataclasses
import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from pipeline.core.config import load_config
from pipeline.core.config_rollout import MetricRule, Rollout, Step
from pipeline.gate.analysis import Sample, StepAnalysis, Verdict, judge, judge_interval
from pipeline.tools import docker as docker_tool
from pipeline.tools import prometheus
from tests.integration.prometheus_support import running_prometheus
from tests.ports import PortPool

pytestmark = pytest.mark.engine
free_port = PortPool(range(19700, 19750)).take

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)
# (requests per second, share answering 500, latency in seconds) of each track
TRACKS = {"stable": (20.0, 0.0, 0.04), "canary": (20.0, 0.2, 0.4)}
ERROR_RATIO = MetricRule(
    name="error-ratio", max=0.05, baseline_margin=0.02,
    query='sum(rate(http_requests_total{service="$service",track="$track",code=~"5.."}[$window])) / '
          'sum(rate(http_requests_total{service="$service",track="$track"}[$window]))')
P95 = MetricRule(
    name="p95-latency", max=0.3, baseline_ratio=2.0,
    query='histogram_quantile(0.95, sum by (le) '
          '(rate(http_request_duration_seconds_bucket{service="$service",track="$track"}[$window])))')


def _exposition(started: float) -> str:
    """The counters as a service would expose them after `now - started` seconds of steady traffic."""
    elapsed = time.monotonic() - started
    lines = ["# TYPE http_requests_total counter", "# TYPE http_request_duration_seconds histogram"]
    for track, (rps, errors, latency) in TRACKS.items():
        total = int(rps * elapsed)
        bad = int(total * errors)
        lab = f'service="veza-backend-api",track="{track}"'
        lines.append(f'http_requests_total{{{lab},code="200"}} {total - bad}')
        lines.append(f'http_requests_total{{{lab},code="500"}} {bad}')
        for le in BUCKETS:
            lines.append(f'http_request_duration_seconds_bucket{{{lab},le="{le}"}} {total if latency <= le else 0}')
        lines.append(f'http_request_duration_seconds_bucket{{{lab},le="+Inf"}} {total}')
        lines.append(f"http_request_duration_seconds_count{{{lab}}} {total}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def exporter() -> Iterator[int]:
    started = time.monotonic()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = _exposition(started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def prometheus_url(exporter: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    scrape = ("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
              "scrape_configs:\n  - job_name: veza\n"
              f"    static_configs: [{{targets: ['127.0.0.1:{exporter}']}}]\n")
    with running_prometheus(scrape, tmp_path_factory.mktemp("prometheus"), free_port()) as url:
        deadline = time.monotonic() + 60
        # rate() over [5s] reads steady traffic once a series has been scraped for longer than the window
        while (prometheus.single_value(prometheus.query(
                url, 'count_over_time(http_requests_total{track="stable",code="200"}[10s])')) or 0) < 7:
            assert time.monotonic() < deadline, "Prometheus did not scrape the exporter for 7 s within 60 s"
            time.sleep(0.5)
        yield url


def _value(url: str, rule: MetricRule, track: str, service: str = "veza-backend-api") -> float | None:
    return prometheus.single_value(prometheus.query(url, rule.render(service=service, track=track, window="5s")))


def test_a_canary_serving_500s_to_a_fifth_fails_the_error_ratio_rule(prometheus_url: str) -> None:
    canary, stable = _value(prometheus_url, ERROR_RATIO, "canary"), _value(prometheus_url, ERROR_RATIO, "stable")
    assert canary == pytest.approx(0.2, abs=0.05) and stable == 0.0
    j = judge(ERROR_RATIO, Sample("error-ratio", canary, stable))
    assert j.verdict is Verdict.FAIL and "> max 0.05" in j.reason


def test_a_latency_regression_fails_the_p95_rule_against_the_stable_baseline(prometheus_url: str) -> None:
    canary, stable = _value(prometheus_url, P95, "canary"), _value(prometheus_url, P95, "stable")
    assert canary is not None and stable is not None and canary > 0.25 and stable <= 0.05
    assert judge(P95, Sample("p95-latency", canary, stable)).verdict is Verdict.FAIL


def test_no_data_from_prometheus_is_judged_by_the_policy_not_as_healthy(prometheus_url: str) -> None:
    missing = _value(prometheus_url, ERROR_RATIO, "canary", service="veza-not-deployed")
    assert missing is None
    rollout = Rollout(strategy="canary", steps=(Step(25, 10),), interval_s=5, metrics=(ERROR_RATIO,))
    interval = judge_interval(rollout, {"error-ratio": Sample("error-ratio", missing, 0.0)}, requests=None)
    decision, reason = StepAnalysis(rollout, 10).add(interval)
    assert interval.verdict is Verdict.FAIL and decision.value == "abort" and "no-data policy: abort" in reason


def test_the_stable_version_passes_every_rule(prometheus_url: str) -> None:
    for rule in (ERROR_RATIO, P95):
        value = _value(prometheus_url, rule, "stable")
        assert judge(rule, Sample(rule.name, value, value)).verdict is Verdict.PASS, (rule.name, value)


def test_a_bad_query_and_a_stopped_prometheus_are_clear_errors(prometheus_url: str) -> None:
    with pytest.raises(prometheus.PrometheusQueryError, match="refused the query"):
        prometheus.query(prometheus_url, "sum(rate(http_requests_total[5s])")
    with pytest.raises(prometheus.PrometheusQueryError, match="returned 2 series, not one"):
        prometheus.single_value(prometheus.query(prometheus_url, "sum by (track) (http_requests_total)"))
    dead = f"http://127.0.0.1:{free_port()}"
    assert not prometheus.ready(dead)
    with pytest.raises(prometheus.PrometheusUnavailable, match="did not answer"):
        prometheus.query(dead, "up")


def test_tracks_are_told_apart_by_label_in_a_range_query(prometheus_url: str) -> None:
    now = time.time()
    series = prometheus.query_range(prometheus_url, "sum by (track) (rate(http_requests_total[5s]))",
                                    now - 3, now, 1)
    by_track = {s.labels["track"]: s for s in series}
    assert set(by_track) == {"stable", "canary"} and all(len(s.points) >= 2 for s in series)
    assert all(v == pytest.approx(20.0, rel=0.3) for _, v in by_track["canary"].points), by_track


def test_the_image_runs_as_a_non_root_user_and_declares_no_volume(prometheus_url: str) -> None:
    """No VOLUME: the TSDB goes where the deploy mounts it (an emptyDir; a tmpfs here)."""
    attrs = docker_tool.client().images.get(load_config(check_files=False).bases["prometheus"].local).attrs
    assert not (attrs["Config"].get("Volumes") or {}) and attrs["Config"]["User"] == "999:999"


def test_an_environment_s_external_prometheus_is_observed_at_its_url(prometheus_url: str) -> None:
    """`[environments.X.rollout] prometheus = URL`: status asks that URL (no cluster involved): up with its scrape
    targets; a URL where nothing answers is down, with the reason."""
    from pipeline.stages.deploy.monitoring import observe_monitoring, source

    cfg = load_config(check_files=False)
    base = cfg.env("staging")
    env = dataclasses.replace(base, rollout=dataclasses.replace(base.rollout, prometheus=prometheus_url))
    assert source(env) == "external" and source(base) == "none"
    mon = observe_monitoring(env)
    assert (mon.source, mon.where, mon.up, mon.targets_up, mon.targets) == ("external", prometheus_url, True, 1, 1)
    assert mon.line() == f"monitoring: external Prometheus at {prometheus_url}: up, 1/1 scrape target(s) up"

    nothing = f"http://127.0.0.1:{free_port()}"   # a free port of this file's range: nothing listens there
    env = dataclasses.replace(base, rollout=dataclasses.replace(base.rollout, prometheus=nothing))
    down = observe_monitoring(env)
    assert not down.up and down.problem.startswith("not ready"), down
    assert "DOWN" in down.line()
