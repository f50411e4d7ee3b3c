"""The rollout analysis, pure: metric samples of the new and the stable version → a verdict per interval → a
decision per step. No Prometheus call here (pipeline/tools/prometheus.py reads the samples).

Semantics, each one explicit because it is what progressive-delivery users most often trip over:
- **No data** (a query returns no sample, or NaN) is never read as "healthy". The environment's `no_data`
  policy says what it is: `abort` (default: stop now), `fail` (a failed interval, counted against
  `failure_limit`) or `pass` (accepted, and said so in the reason).
- **Inconclusive** (the canary saw fewer than `min_requests` in the interval, or a baseline comparison has no
  baseline sample) follows the `inconclusive` policy the same way.
- **Baseline**: the stable version is the baseline; a rule with `baseline_ratio`/`baseline_margin` fails when
  canary > ratio × baseline + margin (ratio 1 and margin 0 when unset).
- A step passes when its analysis time has run out with at most `failure_limit` failed intervals; one more
  failed interval aborts the rollout at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pipeline.core.config_rollout import MetricRule, Rollout


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no-data"
    INCONCLUSIVE = "inconclusive"


class Decision(StrEnum):
    CONTINUE = "continue"     # keep analysing this step
    ADVANCE = "advance"       # the step's analysis time ran out and it passed
    ABORT = "abort"


@dataclass(frozen=True)
class Sample:
    """One evaluation of one metric: the new version's value and the stable version's (None: no sample)."""
    metric: str
    canary: float | None
    baseline: float | None = None


@dataclass(frozen=True)
class Judgement:
    metric: str
    verdict: Verdict
    reason: str
    canary: float | None = None
    baseline: float | None = None
    threshold: float | None = None   # the bound the canary value was held to (for the report's chart)


@dataclass(frozen=True)
class Interval:
    """All metrics of one interval, and the requests the canary saw in it (None: not counted)."""
    judgements: tuple[Judgement, ...]
    requests: int | None
    verdict: Verdict       # the interval's, after the no-data/inconclusive policies: PASS or FAIL only
    reason: str


def _present(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


def judge(rule: MetricRule, sample: Sample) -> Judgement:
    """One metric's verdict for one interval (no policy applied yet: NO_DATA/INCONCLUSIVE are reported as such)."""
    canary, baseline = _present(sample.canary), _present(sample.baseline)
    if canary is None:
        return Judgement(rule.name, Verdict.NO_DATA, f"{rule.name}: no sample for the new version")
    if rule.max is not None and canary > rule.max:
        return Judgement(rule.name, Verdict.FAIL, f"{rule.name} {shown_value(canary)} > max {rule.max:g}",
                         canary, baseline, rule.max)
    if rule.min is not None and canary < rule.min:
        return Judgement(rule.name, Verdict.FAIL, f"{rule.name} {shown_value(canary)} < min {rule.min:g}",
                         canary, baseline, rule.min)
    limit: float | None = None
    if rule.compares_baseline:
        if baseline is None:
            return Judgement(rule.name, Verdict.INCONCLUSIVE,
                             f"{rule.name}: no baseline sample from the stable version to compare with", canary)
        if math.isinf(canary) and canary == baseline:
            # histogram_quantile()'s +Inf: both quantiles lie above the largest finite bucket, so neither bounds
            # the other (inf <= inf would pass a canary that may be far slower)
            return Judgement(rule.name, Verdict.INCONCLUSIVE,
                             f"{rule.name}: {shown_value(canary)} for both versions (above the largest finite "
                             "histogram bucket): no comparison", canary, baseline)
        ratio = 1.0 if rule.baseline_ratio is None else rule.baseline_ratio
        margin = 0.0 if rule.baseline_margin is None else rule.baseline_margin
        limit = ratio * baseline + margin
        if canary > limit:
            return Judgement(rule.name, Verdict.FAIL,
                             f"{rule.name} {shown_value(canary)} > {shown_value(limit)} "
                             f"(stable {shown_value(baseline)} × {ratio:g} + {margin:g})",
                             canary, baseline, limit)
    uppers = [b for b in (rule.max, limit) if b is not None]
    bound = min(uppers) if uppers else rule.min   # the line the report draws
    return Judgement(rule.name, Verdict.PASS, f"{rule.name} {shown_value(canary)} within bounds", canary, baseline,
                     bound)


def shown_value(v: float) -> str:
    """A sample value as a reason or a chart shows it: 4 significant digits; ±infinity as Prometheus's HTTP API
    writes it ("+Inf"/"-Inf"; +Inf: a quantile above every finite histogram bucket)."""
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:.4g}"


def judge_interval(rollout: Rollout, samples: Mapping[str, Sample], requests: int | None) -> Interval:
    """Every metric of `rollout` judged on `samples` (keyed by metric name; a missing key is no data), then the
    policies: a FAIL fails the interval; otherwise NO_DATA and INCONCLUSIVE take their policy ("pass" keeps
    the interval passing, "fail"/"abort" fail it; Step tells abort apart)."""
    judgements = tuple(judge(rule, samples.get(rule.name, Sample(rule.name, None))) for rule in rollout.metrics)
    if requests is not None and requests < rollout.min_requests:
        judgements += (Judgement("traffic", Verdict.INCONCLUSIVE,
                                 f"the new version saw {requests} requests, fewer than min_requests "
                                 f"{rollout.min_requests}"),)
    failed = [j for j in judgements if j.verdict is Verdict.FAIL]
    if failed:
        return Interval(judgements, requests, Verdict.FAIL, "; ".join(j.reason for j in failed))
    for kind, policy in ((Verdict.NO_DATA, rollout.no_data), (Verdict.INCONCLUSIVE, rollout.inconclusive)):
        hit = [j for j in judgements if j.verdict is kind]
        if hit and policy != "pass":
            return Interval(judgements, requests, Verdict.FAIL,
                            "; ".join(j.reason for j in hit) + f" ({kind.value} policy: {policy})")
    passed_by_policy = [j.reason for j in judgements if j.verdict in (Verdict.NO_DATA, Verdict.INCONCLUSIVE)]
    reason = "all metrics within bounds" + (f" (accepted by policy: {'; '.join(passed_by_policy)})"
                                            if passed_by_policy else "")
    return Interval(judgements, requests, Verdict.PASS, reason)


def _aborts_at_once(rollout: Rollout, interval: Interval) -> bool:
    """A failed interval that comes from no data / inconclusive under an `abort` policy ends the rollout now."""
    if interval.verdict is not Verdict.FAIL or any(j.verdict is Verdict.FAIL for j in interval.judgements):
        return False
    kinds = {j.verdict for j in interval.judgements}
    return (Verdict.NO_DATA in kinds and rollout.no_data == "abort") or \
        (Verdict.INCONCLUSIVE in kinds and rollout.inconclusive == "abort")


@dataclass
class StepAnalysis:
    """The intervals of one step so far, and the decision they lead to."""
    rollout: Rollout
    analysis_s: int
    intervals: list[Interval] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(1 for i in self.intervals if i.verdict is Verdict.FAIL)

    def add(self, interval: Interval) -> tuple[Decision, str]:
        """Record one interval; the decision after it and its reason."""
        self.intervals.append(interval)
        if _aborts_at_once(self.rollout, interval):
            return Decision.ABORT, interval.reason
        if self.failures > self.rollout.failure_limit:
            return Decision.ABORT, (f"{self.failures} failed interval(s), above failure_limit "
                                    f"{self.rollout.failure_limit}: {interval.reason}")
        if len(self.intervals) * self.rollout.interval_s >= self.analysis_s:
            return Decision.ADVANCE, (f"{len(self.intervals)} interval(s) judged, {self.failures} failed "
                                      f"(failure_limit {self.rollout.failure_limit})")
        return Decision.CONTINUE, interval.reason


def achieved_weight(new_ready: int, stable_ready: int) -> float:
    """The share of ready pods running the new version, in per cent: without a router, the weight a Service
    actually gives it (kube-proxy spreads connections over ready endpoints). 0 when nothing is ready."""
    total = new_ready + stable_ready
    return 0.0 if total == 0 else 100.0 * new_ready / total


def replicas_for(weight: int, total: int) -> tuple[int, int]:
    """(new, stable) replica counts closest to `weight` per cent of `total` pods, with at least one of each
    while a canary runs (so the stable version keeps serving). `total` < 2 is raised to 2."""
    total = max(total, 2)
    new = min(total - 1, max(1, round(total * weight / 100)))
    return new, total - new

