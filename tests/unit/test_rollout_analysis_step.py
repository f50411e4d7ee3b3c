"""A rollout step judged interval by interval (pipeline/stages/deploy/analysis.py) on recorded Prometheus answers and
an injected clock: the decision, its reason, the policies for no data, too little traffic and query errors, the
failure limit, and the series kept for the report. The same code runs against a real Prometheus in
tests/integration/test_rollout_analysis.py."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.core.config_rollout import DEFAULT_METRICS, REQUESTS, MetricRule, Rollout, Step, duration_s
from pipeline.stages.deploy.analysis import ABORT, PROMOTE_STEP, StepResult, Target, run_step
from pipeline.tools.prometheus import PrometheusQueryError, PrometheusUnavailable

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0
TARGET = Target(service="veza-backend-api", namespace="veza-staging", release="veza")
ERRORS = MetricRule(name="error-ratio", query='errors{service="$service",track="$track"}[$window]', max=0.05,
                    baseline_margin=0.02)
P95 = MetricRule(name="p95", query='p95{service="$service",track="$track"}', max=0.5)
ROLLOUT = Rollout(strategy="canary", steps=(Step(25, 30),), interval_s=10, window="30s", min_requests=20,
                  metrics=(ERRORS, P95), requests='reqs{service="$service",track="$track"}[$interval]')
STEP = ROLLOUT.steps[0]

Answer = float | None | Exception


class FakeClock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.t += seconds


class Recorded:
    """Prometheus answers by (what, track) and by interval: `what` is a metric name or "requests"; an answer is
    a value, None (no sample) or an exception to raise. The interval is found from the query's time."""

    def __init__(self, clock: FakeClock, answers: dict[tuple[str, str], Callable[[int], Answer]],
                 rollout: Rollout = ROLLOUT, query_s: float = 0.0) -> None:
        self.clock, self.rollout, self.query_s = clock, rollout, query_s
        self.by_query = {self._render(what, track): fn for (what, track), fn in answers.items()}
        self.asked: list[tuple[str, float]] = []

    def _render(self, what: str, track: str) -> str:
        rule = (MetricRule("requests", self.rollout.requests) if what == "requests"
                else next(r for r in self.rollout.metrics if r.name == what))
        return rule.render(**TARGET.placeholders(self.rollout, track))

    def value(self, promql: str, at: float) -> float | None:
        self.asked.append((promql, at))
        self.clock.t += self.query_s          # a slow Prometheus
        index = round((at - T0) / self.rollout.interval_s)
        answer = self.by_query[promql](index)
        if isinstance(answer, Exception):
            raise answer
        return answer


def const(v: Answer) -> Callable[[int], Answer]:
    return lambda _i: v


def healthy(**over: Callable[[int], Answer]) -> dict[tuple[str, str], Callable[[int], Answer]]:
    answers = {("requests", "canary"): const(100.0), ("error-ratio", "canary"): const(0.01),
               ("error-ratio", "stable"): const(0.0), ("p95", "canary"): const(0.1)}
    answers.update({tuple(k.split("__")): v for k, v in over.items()})  # type: ignore[misc]
    return answers


def run(answers: dict[tuple[str, str], Callable[[int], Answer]], rollout: Rollout = ROLLOUT,
        **kw: float) -> tuple[StepResult, Recorded, FakeClock]:
    clock = FakeClock()
    prom = Recorded(clock, answers, rollout, **kw)
    return run_step(rollout, TARGET, rollout.steps[0], 1, prom, clock, settle_s=0), prom, clock


def test_a_good_canary_is_promoted_after_its_analysis_time_and_every_query_is_asked_on_the_interval() -> None:
    result, prom, clock = run(healthy())
    assert result.decision == PROMOTE_STEP and [i.outcome for i in result.intervals] == ["pass"] * 3
    assert result.reason == "step 1 (weight 25%): 3 interval(s) judged, 0 failed (failure_limit 0)"
    assert clock.t == T0 + 30
    # per interval: requests, error-ratio canary + stable (it compares), p95 canary only (it does not)
    assert [at for _, at in prom.asked] == [T0 + 10] * 4 + [T0 + 20] * 4 + [T0 + 30] * 4
    assert prom.asked[0][0] == 'reqs{service="veza-backend-api",track="canary"}[10s]'
    assert prom.asked[2][0] == 'errors{service="veza-backend-api",track="stable"}[30s]'


def test_the_first_interval_waits_for_the_window_to_hold_only_traffic_at_the_new_weight() -> None:
    clock, rollout = FakeClock(), replace(ROLLOUT, window="1m")
    prom = Recorded(clock, healthy(), rollout)
    result = run_step(rollout, TARGET, STEP, 1, prom, clock)
    assert result.started == T0 + 60 and result.intervals[0].t == T0 + 70 and prom.asked[0][1] == T0 + 70
    assert result.decision == PROMOTE_STEP and clock.t == T0 + 60 + 30


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1m", 60), ("1h30m", 5400), ("250ms", 0.25)])
def test_promql_durations_in_seconds(text: str, seconds: float) -> None:
    assert duration_s(text) == seconds


def test_a_slow_prometheus_does_not_stretch_the_schedule() -> None:
    result, prom, _ = run(healthy(), query_s=1.5)
    assert result.decision == PROMOTE_STEP
    firsts = [at for q, at in prom.asked if q.startswith("reqs")]
    assert firsts == [T0 + 10, T0 + 20, T0 + 30]


def test_a_canary_serving_errors_is_aborted_at_the_first_interval_with_metric_value_threshold_and_stable() -> None:
    result, _, clock = run(healthy(**{"error-ratio__canary": const(0.2)}))
    assert result.decision == ABORT and len(result.intervals) == 1 and clock.t == T0 + 10
    assert re.fullmatch(r"step 1 \(weight 25%\), interval 1/3 at \d\d:\d\d:\d\dZ: 1 failed interval\(s\), above "
                        r"failure_limit 0: error-ratio 0\.2 > max 0\.05 \(stable 0\)", result.reason), result.reason
    # the chart's line is the tightest bound (stable 0 + margin 0.02), also where the value broke max
    assert result.series()["error-ratio"][0].threshold == pytest.approx(0.02)


def test_the_failure_limit_tolerates_failed_intervals_then_aborts() -> None:
    bad_then_good = {"error-ratio__canary": lambda i: 0.2 if i == 1 else 0.01}
    result, _, _ = run(healthy(**bad_then_good), replace(ROLLOUT, failure_limit=1))
    assert result.decision == PROMOTE_STEP and "3 interval(s) judged, 1 failed (failure_limit 1)" in result.reason
    result, _, _ = run(healthy(**{"error-ratio__canary": const(0.2)}), replace(ROLLOUT, failure_limit=1))
    assert result.decision == ABORT and len(result.intervals) == 2
    assert "interval 2/3" in result.reason and "2 failed interval(s), above failure_limit 1" in result.reason


def test_a_canary_within_its_absolute_bound_fails_against_the_stable_baseline() -> None:
    result, _, _ = run(healthy(**{"error-ratio__canary": const(0.04), "error-ratio__stable": const(0.01)}))
    assert result.decision == ABORT and "error-ratio 0.04 > 0.03 (stable 0.01 × 1 + 0.02)" in result.reason
    point = result.series()["error-ratio"][0]
    assert (point.canary, point.baseline, point.threshold, point.verdict) == (0.04, 0.01, pytest.approx(0.03), "fail")


@pytest.mark.parametrize(("policy", "decision", "intervals", "said"), [
    ("abort", ABORT, 1, "p95: no sample for the new version (no-data policy: abort)"),
    ("fail", ABORT, 2, "2 failed interval(s), above failure_limit 1: p95: no sample for the new version "
                       "(no-data policy: fail)"),
    ("pass", PROMOTE_STEP, 3, "3 interval(s) passed only by policy (no-data policy: pass)"),
])
def test_no_data_is_handled_as_configured(policy: str, decision: str, intervals: int, said: str) -> None:
    result, _, _ = run(healthy(p95__canary=const(None)), replace(ROLLOUT, no_data=policy, failure_limit=1))
    assert (result.decision, len(result.intervals)) == (decision, intervals) and said in result.reason, result.reason
    assert {i.outcome for i in result.intervals} == {"no-data"}


def test_nan_from_a_ratio_of_zero_rates_is_no_data_not_a_pass() -> None:
    result, _, _ = run(healthy(**{"error-ratio__canary": const(float("nan"))}))
    assert result.decision == ABORT and "error-ratio: no sample for the new version" in result.reason
    assert result.series()["error-ratio"][0].canary is None


@pytest.mark.parametrize("counted", [5.0, None])
def test_too_few_canary_requests_are_inconclusive(counted: float | None) -> None:
    result, _, _ = run(healthy(requests__canary=const(counted)))
    seen = 5 if counted else 0
    assert result.decision == ABORT and result.intervals[0].outcome == "inconclusive"
    assert f"saw {seen} requests, fewer than min_requests 20 (inconclusive policy: abort)" in result.reason
    passed, _, _ = run(healthy(requests__canary=const(counted)), replace(ROLLOUT, inconclusive="pass"))
    assert passed.decision == PROMOTE_STEP and "inconclusive policy: pass" in passed.reason


def test_a_quiet_canary_is_inconclusive_and_its_empty_ratios_are_named_too() -> None:
    result, _, _ = run(healthy(requests__canary=const(0.0), **{"error-ratio__canary": const(float("nan"))}),
                       replace(ROLLOUT, no_data="pass"))
    assert result.decision == ABORT and result.intervals[0].outcome == "inconclusive"
    assert result.reason.endswith("error-ratio: no sample for the new version (no-data policy: pass); the new "
                                  "version saw 0 requests, fewer than min_requests 20 (inconclusive policy: abort)")


def test_a_missing_baseline_is_inconclusive() -> None:
    result, _, _ = run(healthy(**{"error-ratio__stable": const(None)}))
    assert result.decision == ABORT and "no baseline sample from the stable version" in result.reason


@pytest.mark.parametrize("error", [
    PrometheusUnavailable("Prometheus at http://127.0.0.1:9 did not answer: refused", "start it"),
    PrometheusQueryError("Prometheus refused the query (400 bad_data): parse error", "fix the template"),
])
def test_a_query_error_aborts_with_prometheus_s_reason_by_default(error: Exception) -> None:
    result, prom, _ = run(healthy(p95__canary=const(error)))
    assert result.decision == ABORT and result.intervals[0].outcome == "query-error"
    assert f"query-error on p95 (canary): {error.args[0]} (query_error policy: abort)" in result.reason
    assert len(prom.asked) == 4                          # requests, error-ratio x2, then p95: nothing after it
    assert result.intervals[0].points["error-ratio"].canary == 0.01


def test_a_query_error_under_the_fail_policy_counts_against_the_failure_limit() -> None:
    down_once: Callable[[int], Answer] = lambda i: PrometheusUnavailable("down", "") if i == 2 else 100.0  # noqa: E731
    rollout = replace(ROLLOUT, query_error="fail", failure_limit=1)
    result, _, _ = run(healthy(requests__canary=down_once), rollout)
    assert result.decision == PROMOTE_STEP and "1 failed (failure_limit 1)" in result.reason
    assert [i.outcome for i in result.intervals] == ["pass", "query-error", "pass"]
    result, _, _ = run(healthy(requests__canary=down_once), replace(rollout, failure_limit=0))
    assert result.decision == ABORT and "above failure_limit 0: query-error on the request count" in result.reason


def test_every_interval_s_values_are_kept_per_metric_for_the_chart() -> None:
    climbing = {"error-ratio__canary": lambda i: 0.01 * i}
    seen: list[int] = []
    clock = FakeClock()
    result = run_step(replace(ROLLOUT, failure_limit=5), TARGET, STEP, 1, Recorded(clock, healthy(**climbing)),
                      clock, settle_s=0, on_interval=lambda r: seen.append(len(r.intervals)))
    assert seen == [1, 2, 3]
    series = result.series()
    assert [(p.t, p.canary, p.baseline, p.verdict) for p in series["error-ratio"]] == [
        (T0 + 10, 0.01, 0.0, "pass"), (T0 + 20, 0.02, 0.0, "pass"), (T0 + 30, pytest.approx(0.03), 0.0, "fail")]
    assert [p.threshold for p in series["error-ratio"]] == [pytest.approx(0.02)] * 3   # stable 0 + margin 0.02
    assert [(p.baseline, p.threshold) for p in series["p95"]] == [(None, 0.5)] * 3
    doc = json.loads(json.dumps(result.as_dict()))
    assert doc["decision"] == PROMOTE_STEP and doc["intervals"][2]["points"]["error-ratio"]["verdict"] == "fail"
    assert doc["intervals"][0]["requests"] == 100


def test_the_default_templates_select_the_series_and_labels_the_services_export() -> None:
    """The metric names and the labels the defaults filter on (besides the target labels Prometheus adds: namespace,
    service, track) are the ones the Go kit and the Rust chat-server write on /metrics."""
    exporters = [ROOT / "services/backend-api/kit/kit.go", ROOT / "services/chat-server/src/main.rs"]
    texts = [p.read_text() for p in exporters]
    for template in [REQUESTS] + [m.query for m in DEFAULT_METRICS]:
        for name, labels in re.findall(r"([a-z_]+)\{([^}]*)\}", template):
            series = name.removesuffix("_bucket")
            for text in texts:
                assert f"# TYPE {series} " in text, (series, template)
                own = {lab.split("=")[0].strip(" !~") for lab in labels.split(",")} - {"namespace", "service", "track"}
                exposed = re.findall(rf"{name}\{{([^\n]*)\}}", text)
                assert exposed and all(any(f"{lab}=" in e for e in exposed) for lab in own), (name, own)
    assert 'route!="/metrics"' in REQUESTS     # Prometheus's own scrapes are not traffic


class Killed(Exception):
    """Stands for `kill -9` after an interval was recorded: nothing after it runs."""


@pytest.mark.parametrize("down_s", [0.0, 100.0])
def test_a_step_killed_mid_analysis_resumes_from_its_record_to_the_same_result(down_s: float) -> None:
    """Killed after interval 2 of 3, rerun `down_s` later from the recorded JSON: the rerun asks only interval 3,
    at its scheduled time (a past instant when the rerun comes late), and ends where an unbroken run ends."""
    answers = healthy(**{"error-ratio__canary": lambda i: 0.2 if i == 3 else 0.01})
    unbroken, _, _ = run(answers)
    recorded: list[str] = []

    def record_then_die(result: StepResult) -> None:
        recorded.append(json.dumps(result.as_dict()))
        if len(result.intervals) == 2:
            raise Killed

    clock = FakeClock()
    with pytest.raises(Killed):
        run_step(ROLLOUT, TARGET, STEP, 1, Recorded(clock, answers), clock, settle_s=0, on_interval=record_then_die)
    clock.t += down_s
    prom = Recorded(clock, answers)
    resumed = run_step(ROLLOUT, TARGET, STEP, 1, prom, clock, resume=StepResult.from_dict(json.loads(recorded[-1])))
    assert {at for _, at in prom.asked} == {T0 + 30}
    assert resumed.as_dict() == unbroken.as_dict() and resumed.decision == ABORT
    again = Recorded(clock, answers)
    assert run_step(ROLLOUT, TARGET, STEP, 1, again, clock, resume=resumed).as_dict() == unbroken.as_dict()
    assert not again.asked                                    # a decided step is not judged twice
    with pytest.raises(ValueError, match="is of step 1 \\(weight 25%\\), not of step 2"):
        run_step(ROLLOUT, TARGET, Step(50, 30), 2, again, clock, resume=resumed)


def test_the_failure_limit_counts_the_failed_intervals_before_a_kill() -> None:
    answers = healthy(**{"error-ratio__canary": lambda i: 0.2 if i in (1, 3) else 0.01})
    rollout = replace(ROLLOUT, failure_limit=1)
    recorded: list[dict[str, object]] = []

    def record_then_die(result: StepResult) -> None:
        recorded.append(json.loads(json.dumps(result.as_dict())))
        raise Killed

    clock = FakeClock()
    with pytest.raises(Killed):
        run_step(rollout, TARGET, STEP, 1, Recorded(clock, answers, rollout), clock, settle_s=0,
                 on_interval=record_then_die)
    resumed = run_step(rollout, TARGET, STEP, 1, Recorded(clock, answers, rollout), clock,
                       resume=StepResult.from_dict(recorded[-1]))
    assert resumed.decision == ABORT and "interval 3/3" in resumed.reason
    assert "2 failed interval(s), above failure_limit 1" in resumed.reason


def test_an_infinite_p95_is_written_as_valid_json_read_back_and_fails_its_bound() -> None:
    """histogram_quantile() answers +Inf when the quantile lies in the +Inf bucket: the interval fails the p95's max,
    and the record is strict JSON ("+Inf", as Prometheus's API writes it), read back to the same value."""
    result, _, _ = run(healthy(p95__canary=const(float("inf"))))
    assert result.decision == ABORT and "p95 +Inf > max 0.5" in result.reason, result.reason
    text = json.dumps(result.as_dict(), allow_nan=False)   # raises on Infinity/NaN
    point = json.loads(text)["intervals"][0]["points"]["p95"]
    assert point["canary"] == "+Inf" and point["threshold"] == 0.5
    back = StepResult.from_dict(json.loads(text))
    assert back == result and back.intervals[0].points["p95"].canary == float("inf")


def test_an_infinite_stable_p95_is_valid_json_and_two_infinite_p95s_are_not_a_pass() -> None:
    rollout = replace(ROLLOUT, metrics=(replace(P95, max=None, baseline_ratio=1.5), ERRORS))
    inf = const(float("inf"))
    faster, _, _ = run(healthy(p95__canary=const(0.2), p95__stable=inf), rollout)
    assert faster.decision == PROMOTE_STEP, faster.reason   # below the stable version's +Inf
    point = json.loads(json.dumps(faster.as_dict(), allow_nan=False))["intervals"][0]["points"]["p95"]
    assert (point["baseline"], point["threshold"]) == ("+Inf", "+Inf")
    both, _, _ = run(healthy(p95__canary=inf, p95__stable=inf), rollout)
    assert both.decision == ABORT and both.intervals[0].outcome == "inconclusive", both.reason
    assert "+Inf for both versions" in both.reason
    json.dumps(both.as_dict(), allow_nan=False)


@pytest.mark.parametrize("value", ["Infinity", "inf", "1.0", True, [1]])
def test_a_recorded_value_of_another_shape_is_refused(value: object) -> None:
    from pipeline.stages.deploy.analysis import read_value

    with pytest.raises(ValueError):
        read_value(value)
