"""The analysis decides from samples: thresholds, the stable baseline, no data and inconclusive policies,
failure limits, and the weight a replica ratio really gives."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pipeline.core.config_rollout import MetricRule, Rollout, Step
from pipeline.gate.analysis import (
    Decision,
    Sample,
    StepAnalysis,
    Verdict,
    achieved_weight,
    judge,
    judge_interval,
    replicas_for,
)

ERRORS = MetricRule(name="error-ratio", query='x{track="$track"}', max=0.05, baseline_margin=0.02)
P95 = MetricRule(name="p95", query='y{track="$track"}', baseline_ratio=1.5)
ROLLOUT = Rollout(strategy="canary", steps=(Step(25, 30),), interval_s=10, metrics=(ERRORS, P95), min_requests=20)


def _samples(err: float | None, p95: float | None, base_err: float | None = 0.0,
             base_p95: float | None = 0.1) -> dict[str, Sample]:
    return {"error-ratio": Sample("error-ratio", err, base_err), "p95": Sample("p95", p95, base_p95)}


@pytest.mark.parametrize(("rule", "sample", "verdict", "said"), [
    (ERRORS, Sample("e", 0.01, 0.0), Verdict.PASS, "within bounds"),
    (ERRORS, Sample("e", 0.2, 0.19), Verdict.FAIL, "> max 0.05"),              # absolute bound first
    (ERRORS, Sample("e", 0.04, 0.01), Verdict.FAIL, "> 0.03 (stable 0.01"),   # within max, above baseline+margin
    (ERRORS, Sample("e", None, 0.0), Verdict.NO_DATA, "no sample for the new version"),
    (ERRORS, Sample("e", math.nan, 0.0), Verdict.NO_DATA, "no sample"),        # NaN (0/0 rate) is not data
    (ERRORS, Sample("e", 0.01, None), Verdict.INCONCLUSIVE, "no baseline sample"),
    (P95, Sample("p", 0.14, 0.1), Verdict.PASS, "within bounds"),
    (P95, Sample("p", 0.16, 0.1), Verdict.FAIL, "> 0.15 (stable 0.1 × 1.5 + 0)"),
    (MetricRule(name="ok", query="", min=0.99), Sample("s", 0.9), Verdict.FAIL, "< min 0.99"),
])
def test_one_metric_is_judged_against_its_bounds_and_the_stable_version(rule: MetricRule, sample: Sample,
                                                                        verdict: Verdict, said: str) -> None:
    j = judge(rule, sample)
    assert j.verdict is verdict and said in j.reason


def test_the_threshold_drawn_is_the_tightest_upper_bound() -> None:
    assert judge(ERRORS, Sample("e", 0.0, 0.01)).threshold == pytest.approx(0.03)
    assert judge(ERRORS, Sample("e", 0.0, 0.2)).threshold == 0.05


@pytest.mark.parametrize(("policy", "verdict", "aborts"), [("abort", Verdict.FAIL, True),
                                                           ("fail", Verdict.FAIL, False),
                                                           ("pass", Verdict.PASS, False)])
def test_no_data_follows_its_policy_and_is_never_silently_healthy(policy: str, verdict: Verdict,
                                                                  aborts: bool) -> None:
    rollout = replace(ROLLOUT, no_data=policy, failure_limit=1)
    interval = judge_interval(rollout, _samples(None, None), requests=50)
    assert interval.verdict is verdict and "no sample" in interval.reason
    decision, _ = StepAnalysis(rollout, 30).add(interval)
    assert (decision is Decision.ABORT) is aborts
    if policy == "pass":
        assert "accepted by policy" in interval.reason


def test_too_little_traffic_is_inconclusive_not_a_pass() -> None:
    interval = judge_interval(ROLLOUT, _samples(0.0, 0.1), requests=3)
    assert interval.verdict is Verdict.FAIL and "saw 3 requests, fewer than min_requests 20" in interval.reason
    assert StepAnalysis(ROLLOUT, 30).add(interval)[0] is Decision.ABORT
    assert judge_interval(replace(ROLLOUT, inconclusive="pass"), _samples(0.0, 0.1), 3).verdict is Verdict.PASS


def test_a_step_advances_after_its_time_and_aborts_past_the_failure_limit() -> None:
    good, bad = judge_interval(ROLLOUT, _samples(0.0, 0.1), 50), judge_interval(ROLLOUT, _samples(0.3, 0.1), 50)
    step = StepAnalysis(ROLLOUT, 30)
    assert [step.add(good)[0] for _ in range(3)] == [Decision.CONTINUE, Decision.CONTINUE, Decision.ADVANCE]
    tolerant = StepAnalysis(replace(ROLLOUT, failure_limit=1), 30)
    assert tolerant.add(bad)[0] is Decision.CONTINUE
    decision, reason = tolerant.add(bad)
    assert decision is Decision.ABORT and "2 failed interval(s), above failure_limit 1" in reason
    assert StepAnalysis(ROLLOUT, 30).add(bad)[0] is Decision.ABORT   # failure_limit 0: the first one aborts


@pytest.mark.parametrize(("weight", "total", "expected"), [(25, 4, (1, 3)), (50, 4, (2, 2)), (10, 4, (1, 3)),
                                                           (90, 4, (3, 1)), (25, 1, (1, 1)), (75, 8, (6, 2))])
def test_replicas_keep_both_versions_while_a_canary_runs(weight: int, total: int, expected: tuple[int, int]) -> None:
    assert replicas_for(weight, total) == expected


def test_the_weight_reported_is_the_achieved_one() -> None:
    assert achieved_weight(1, 3) == 25.0 and achieved_weight(1, 1) == 50.0 and achieved_weight(0, 0) == 0.0
