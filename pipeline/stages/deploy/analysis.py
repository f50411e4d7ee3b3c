"""One step of a progressive rollout judged against Prometheus: every `interval_s`, each metric's template is
rendered for the canary track (and for the stable track when its rule compares with the baseline), asked as an
instant query, and judged by pipeline/gate/analysis.py; the step ends as **promote-step** (its analysis time ran
out within `failure_limit`) or **abort** (at the first interval that decides it), with a reason naming the
interval, the metric, its value, the threshold and the stable value.

What an interval can be, before the environment's policies ([environments.<env>.rollout], config_rollout.py):
- pass / fail: every metric within its bounds / one outside them (fail counts against `failure_limit`);
- no-data: a query returned no sample (or NaN): the `no_data` policy;
- inconclusive: the canary saw fewer than `min_requests` requests in the interval (the `requests` template, over
  `$interval`), or a baseline comparison had no stable sample: the `inconclusive` policy;
- query-error: Prometheus did not answer or refused a query: the `query_error` policy (abort | fail), with
  Prometheus's own message. The interval's remaining queries are not asked.

Time comes from an injected Clock and each interval is asked at its scheduled instant (Prometheus's `time`
parameter), so a rerun after a kill judges the same windows, and a unit test replays a recorded
series in milliseconds and an integration test runs the same code on the wall clock. Each interval's values are
kept per metric (time, canary, stable, threshold): the report's chart of the step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.core.config_rollout import MetricRule, Rollout, Step, duration_s
from pipeline.core.errors import PipelineError
from pipeline.gate.analysis import (
    Decision,
    Interval,
    Judgement,
    Sample,
    StepAnalysis,
    Verdict,
    judge_interval,
    shown_value,
)
from pipeline.tools.prometheus import PrometheusQueryError, PrometheusUnavailable

PROMOTE_STEP = "promote-step"
ABORT = "abort"


class Clock(Protocol):
    def now(self) -> float: ...                    # unix seconds
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The wall clock (time.time / time.sleep)."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Querier(Protocol):
    """What the analysis asks of Prometheus (pipeline.tools.prometheus.Client): the one value of `promql` at unix
    time `at`, None for no sample; PrometheusUnavailable / PrometheusQueryError when it cannot say."""

    def value(self, promql: str, at: float) -> float | None: ...


@dataclass(frozen=True)
class Target:
    """Whose versions are compared: the Helm release's service in its namespace, by the `track` label the scrape
    configuration gives each pod (k8s/prometheus-config.yaml: veza.io/track)."""
    service: str
    namespace: str
    release: str
    canary_track: str = "canary"
    baseline_track: str = "stable"

    def placeholders(self, rollout: Rollout, track: str) -> dict[str, str]:
        """The values of a template's $placeholders (config_rollout.PLACEHOLDERS) for one track."""
        return {"service": self.service, "namespace": self.namespace, "release": self.release, "track": track,
                "window": rollout.window, "interval": f"{rollout.interval_s}s"}


@dataclass(frozen=True)
class Point:
    """One interval of one metric, for the chart: unix time, canary and stable values (None: no sample), the
    threshold the canary was held to (None: none could be drawn), and the metric's verdict. A value may be
    infinite: histogram_quantile() answers +Inf when the quantile falls in the +Inf bucket (every observation
    above the largest finite bound); as_dict() writes it as Prometheus's own JSON API does ("+Inf"/"-Inf")."""
    t: float
    canary: float | None
    baseline: float | None
    threshold: float | None
    verdict: str


@dataclass(frozen=True)
class IntervalRecord:
    """One judged interval. outcome: what was seen (pass | fail | no-data | inconclusive | query-error); verdict:
    what it counts as after the policies (pass | fail); points: by metric name."""
    index: int                       # 1-based within the step
    t: float
    requests: int | None             # the canary's requests in the interval (None: not asked, a query failed)
    outcome: str
    verdict: str
    reason: str
    points: dict[str, Point]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "t": self.t, "requests": self.requests, "outcome": self.outcome,
                "verdict": self.verdict, "reason": self.reason,
                "points": {m: _point_dict(p) for m, p in self.points.items()}}


@dataclass
class StepResult:
    """A step's analysis: its decision (promote-step | abort) and reason, and every interval judged."""
    step: int                        # 1-based
    weight: int
    analysis_s: int
    started: float
    decision: str = ""
    reason: str = ""
    intervals: list[IntervalRecord] = field(default_factory=list)

    def series(self) -> dict[str, list[Point]]:
        """Each metric's points in time order (the report's chart)."""
        out: dict[str, list[Point]] = {}
        for interval in self.intervals:
            for name, point in interval.points.items():
                out.setdefault(name, []).append(point)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "weight": self.weight, "analysis_s": self.analysis_s, "started": self.started,
                "decision": self.decision, "reason": self.reason,
                "intervals": [i.as_dict() for i in self.intervals]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StepResult:
        """The result as_dict() wrote (read back from where a run recorded it). KeyError, TypeError or ValueError
        for a document of another shape."""
        intervals = [IntervalRecord(int(i["index"]), float(i["t"]),
                                    None if i["requests"] is None else int(i["requests"]),
                                    str(i["outcome"]), str(i["verdict"]), str(i["reason"]),
                                    {m: Point(float(p["t"]), read_value(p["canary"]), read_value(p["baseline"]),
                                              read_value(p["threshold"]), str(p["verdict"]))
                                     for m, p in i["points"].items()})
                     for i in doc["intervals"]]
        return cls(int(doc["step"]), int(doc["weight"]), int(doc["analysis_s"]), float(doc["started"]),
                   str(doc["decision"]), str(doc["reason"]), intervals)


def _point_dict(p: Point) -> dict[str, Any]:
    return {"t": p.t, "canary": json_value(p.canary), "baseline": json_value(p.baseline),
            "threshold": json_value(p.threshold), "verdict": p.verdict}


def json_value(v: float | None) -> float | str | None:
    """A sample value as JSON can hold it: a finite float as it is, ±infinity as "+Inf"/"-Inf" (the strings of
    Prometheus's HTTP API, https://prometheus.io/docs/prometheus/latest/querying/api/#expression-query-result-formats;
    json.dumps would write `Infinity`, which is not JSON), None as it is. NaN never gets here (_number)."""
    return v if v is None or math.isfinite(v) else shown_value(v)


def read_value(v: object) -> float | None:
    """json_value() read back: None, a number, or "+Inf"/"-Inf" (also the `Infinity` an older state holds, which
    Python's json module reads as a float). ValueError for anything else."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"{v!r} is not a sample value")
    if isinstance(v, str) and v not in ("+Inf", "-Inf"):
        raise ValueError(f"{v!r} is not a sample value")
    return float(v)


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%SZ")


def _number(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


def _drawn_threshold(rule: MetricRule, baseline: float | None) -> float | None:
    """The bound the chart draws, whatever the canary's value (so the line does not jump where it failed or had no
    sample): the tightest of max and ratio × stable + margin, else min (gate/analysis.py's bound for a pass)."""
    uppers = [b for b in (rule.max,) if b is not None]
    if rule.compares_baseline and baseline is not None:
        ratio = 1.0 if rule.baseline_ratio is None else rule.baseline_ratio
        uppers.append(ratio * baseline + (rule.baseline_margin or 0.0))
    return min(uppers) if uppers else rule.min


def _outcome(interval: Interval) -> str:
    """The interval's kind, the most telling first: a quiet canary's ratios have no sample either (0/0), and
    too little traffic is the cause worth naming."""
    kinds = {j.verdict for j in interval.judgements}
    for kind in (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.NO_DATA):
        if kind in kinds:
            return kind.value
    return Verdict.PASS.value


def _policy(rollout: Rollout, kind: Verdict) -> str:
    return rollout.no_data if kind is Verdict.NO_DATA else rollout.inconclusive


def _aborted_by_policy(rollout: Rollout, record: IntervalRecord) -> bool:
    """Whether this interval ends the step by itself: a query error, no data or an inconclusive result whose
    policy is abort, and no metric outside its bounds (that counts against failure_limit instead)."""
    if record.outcome == "query-error":
        return rollout.query_error == "abort"
    if record.outcome == Verdict.FAIL.value:
        return False
    seen = {p.verdict for p in record.points.values()}
    if record.requests is not None and record.requests < rollout.min_requests:
        seen.add(Verdict.INCONCLUSIVE.value)
    return any(kind.value in seen and _policy(rollout, kind) == "abort"
               for kind in (Verdict.NO_DATA, Verdict.INCONCLUSIVE))


def _failure_detail(j: Judgement) -> str:
    """A judgement's reason with the stable value beside it when the reason does not already give it."""
    if j.baseline is not None and "stable" not in j.reason:
        return f"{j.reason} (stable {j.baseline:.4g})"
    return j.reason


class _QueryFailed(Exception):
    def __init__(self, what: str, error: PipelineError) -> None:
        super().__init__(what)
        self.what, self.error = what, error


def _ask(prom: Querier, promql: str, at: float, what: str) -> float | None:
    try:
        return _number(prom.value(promql, at))
    except (PrometheusUnavailable, PrometheusQueryError) as exc:
        raise _QueryFailed(what, exc) from None


def judge_once(rollout: Rollout, target: Target, prom: Querier, at: float,
               index: int) -> tuple[Interval, IntervalRecord]:
    """Ask every query of one interval at unix time `at` and judge it (gate/analysis.py's rules and policies).
    A query error gives a FAIL interval whose record's outcome is query-error (run_step applies its policy)."""
    canary_values = target.placeholders(rollout, target.canary_track)
    baseline_values = target.placeholders(rollout, target.baseline_track)
    samples: dict[str, Sample] = {}
    requests: int | None = None
    try:
        counted = _ask(prom, MetricRule("requests", rollout.requests).render(**canary_values), at,
                       "the request count (requests)")
        requests = 0 if counted is None else round(counted)   # no series at all: no request was counted
        for rule in rollout.metrics:
            canary = _ask(prom, rule.render(**canary_values), at, f"{rule.name} ({target.canary_track})")
            baseline = (_ask(prom, rule.render(**baseline_values), at, f"{rule.name} ({target.baseline_track})")
                        if rule.compares_baseline else None)
            samples[rule.name] = Sample(rule.name, canary, baseline)
    except _QueryFailed as failed:
        reason = (f"query-error on {failed.what}: {failed.error.message} "
                  f"(query_error policy: {rollout.query_error})")
        interval = Interval((Judgement(failed.what, Verdict.FAIL, reason),), requests, Verdict.FAIL, reason)
        points = {name: Point(at, s.canary, s.baseline, None, "query-error") for name, s in samples.items()}
        return interval, IntervalRecord(index, at, requests, "query-error", Verdict.FAIL.value, reason, points)
    interval = judge_interval(rollout, samples, requests)
    by_metric = {j.metric: j for j in interval.judgements}
    points = {rule.name: Point(at, samples[rule.name].canary, samples[rule.name].baseline,
                               _drawn_threshold(rule, samples[rule.name].baseline),
                               by_metric[rule.name].verdict.value)
              for rule in rollout.metrics}
    outside = [_failure_detail(j) for j in interval.judgements if j.verdict is Verdict.FAIL]
    by_policy = [f"{j.reason} ({j.verdict.value} policy: {_policy(rollout, j.verdict)})"
                 for j in interval.judgements if j.verdict in (Verdict.NO_DATA, Verdict.INCONCLUSIVE)]
    reason = "; ".join(outside or by_policy) or "all metrics within bounds"
    return interval, IntervalRecord(index, at, requests, _outcome(interval), interval.verdict.value, reason, points)


def run_step(rollout: Rollout, target: Target, step: Step, step_number: int, prom: Querier, clock: Clock,
             *, settle_s: float | None = None, on_interval: Callable[[StepResult], None] | None = None,
             resume: StepResult | None = None, label: str = "") -> StepResult:
    """Judge one step, whose new weight is in place now: first `settle_s` seconds (default: the rollout's
    `window`, so that every rate() of the first interval covers traffic at this weight only), then an interval
    every `rollout.interval_s` seconds until the step's `analysis_s` is covered (ceil(analysis_s / interval_s)
    intervals) or an interval aborts it. Interval k is asked at its scheduled time, started + k × interval_s
    (Prometheus answers for a past instant too): a slow answer does not shift the next one, and a rerun judges the
    same windows. `label` names the step in its reasons ("": "step N (weight W%)"; blue-green: "preview analysis").
    `on_interval` is called with the result so far after each interval (to record it where a rerun
    finds it); `resume`, that record of this step, continues it from its last judged interval (a decided step is
    returned as it is; intervals missed while nothing ran are judged at their times, on what Prometheus kept).
    Raises nothing for what Prometheus answers: every outcome is in the decision and its reason; ValueError when
    `resume` is another step's."""
    analysis = StepAnalysis(rollout, step.analysis_s)
    if resume is not None:
        if (resume.step, resume.weight, resume.analysis_s) != (step_number, step.weight, step.analysis_s):
            raise ValueError(f"the recorded analysis is of step {resume.step} (weight {resume.weight}%), "
                             f"not of step {step_number} (weight {step.weight}%)")
        result = resume
        for done in result.intervals:   # what the failure limit and the step's length count
            analysis.add(Interval((), done.requests, Verdict(done.verdict), done.reason))
    else:
        clock.sleep(duration_s(rollout.window) if settle_s is None else settle_s)
        result = StepResult(step_number, step.weight, step.analysis_s, clock.now())
    where = label or f"step {step_number} (weight {step.weight}%)"
    total = math.ceil(step.analysis_s / rollout.interval_s)
    while not result.decision:
        index = len(result.intervals) + 1
        at = result.started + index * rollout.interval_s
        clock.sleep(max(0.0, at - clock.now()))
        interval, record = judge_once(rollout, target, prom, at, index)
        result.intervals.append(record)
        decision, why = analysis.add(interval)
        by_policy = _aborted_by_policy(rollout, record)
        if by_policy or decision is Decision.ABORT:
            decision, detail = Decision.ABORT, record.reason
            if not by_policy:
                detail = (f"{analysis.failures} failed interval(s), above failure_limit {rollout.failure_limit}: "
                          f"{detail}")
            result.decision = ABORT
            result.reason = f"{where}, interval {index}/{total} at {_stamp(at)}: {detail}"
        elif decision is Decision.ADVANCE:
            result.decision = PROMOTE_STEP
            result.reason = f"{where}: {why}{_passed_by_policy(result)}"
        if on_interval is not None:
            on_interval(result)
    return result


def _passed_by_policy(result: StepResult) -> str:
    """What a promoted step owes to a `pass` policy rather than to its metrics, said in its reason."""
    kinds = sorted({i.outcome for i in result.intervals if i.verdict == Verdict.PASS.value and i.outcome != "pass"})
    if not kinds:
        return ""
    n = sum(1 for i in result.intervals if i.verdict == Verdict.PASS.value and i.outcome != "pass")
    return f"; {n} interval(s) passed only by policy ({', '.join(k + ' policy: pass' for k in kinds)})"
