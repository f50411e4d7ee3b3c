"""`[environments.<env>.rollout]` is read strictly: each bad value is one line naming its key (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.config_rollout import REQUESTS, MetricRule, promql_escape
from pipeline.core.errors import ConfigError, UsageError
from tests.unit.test_config import VALID, project

__all__ = ["project"]   # the fixture, shared with test_config.py

ERROR_RATIO = ('sum(rate(http_requests_total{namespace="$namespace",service="$service",track="$track",'
               'code=~"5.."}[$window])) / sum(rate(http_requests_total{service="$service",track="$track"}[$window]))')
CANARY = f"""
[environments.dev.rollout]
strategy = "canary"
steps = [{{ weight = 25, analysis_s = 30 }}, {{ weight = 50, analysis_s = 30 }}]
interval_s = 10
[[environments.dev.rollout.metrics]]
name = "error-ratio"
query = '{ERROR_RATIO}'
max = 0.05
baseline_margin = 0.02
"""


def _cfg(project: Path, rollout: str):  # type: ignore[no-untyped-def]
    (project / "pipeline.toml").write_text(VALID.replace("[environments.prod]", rollout + "\n[environments.prod]"))
    return load_config(project / "pipeline.toml")


def _error(project: Path, rollout: str) -> str:
    with pytest.raises(ConfigError) as info:
        _cfg(project, rollout)
    return info.value.one_line()


def test_no_rollout_table_means_all_at_once(project: Path) -> None:
    env = _cfg(project, "").env("dev")
    assert env.rollout.strategy == "all-at-once" and not env.rollout.progressive


def test_a_canary_is_read_with_its_steps_metrics_and_defaults(project: Path) -> None:
    r = _cfg(project, CANARY).env("dev").rollout
    assert r.strategy == "canary" and [(s.weight, s.analysis_s) for s in r.steps] == [(25, 30), (50, 30)]
    assert r.no_data == "abort" and r.inconclusive == "abort" and r.failure_limit == 0
    assert r.metrics[0].max == 0.05 and r.metrics[0].compares_baseline and r.router == "none"
    assert r.max_canary_replicas == 4
    assert _cfg(project, CANARY.replace("interval_s = 10", "interval_s = 10\nmax_canary_replicas = 2")) \
        .env("dev").rollout.max_canary_replicas == 2


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('strategy = "canary"', 'strategy = "linear"', "environments.dev.rollout.strategy: 'linear' is not allowed"),
    ("weight = 50", "weight = 20", "environments.dev.rollout.steps[1].weight: 20 does not grow after 25"),
    ("weight = 50", "weight = 100", "environments.dev.rollout.steps[1].weight: 100 is out of range"),
    ("analysis_s = 30 }, {", "analysis_s = 5 }, {", "rollout.steps: a step's analysis_s is shorter than interval_s"),
    ("interval_s = 10", 'interval_s = 10\nwindow = "one minute"', "rollout.window: 'one minute' is not a PromQL dur"),
    ("interval_s = 10", 'interval_s = 10\nno_data = "ignore"', "rollout.no_data: 'ignore' is not allowed"),
    ("interval_s = 10", 'interval_s = 10\nprometheus = "prom:9090"', "rollout.prometheus: 'prom:9090' is not an"),
    ("interval_s = 10", "interval_s = 10\nintervall_s = 3", "rollout.intervall_s: unknown key (fix: did you mean"),
    ("max = 0.05\nbaseline_margin = 0.02", "", "metrics[0].name: metric 'error-ratio' has no threshold"),
    (',track="$track",code', ',track="$trak",code', "metrics[0].query: unknown placeholder $trak"),
    ("max = 0.05", "max = 0.05\nmin = 0.5", "metrics[0].min: 0.5 is above max 0.05"),
    ("interval_s = 10", "interval_s = 10\nmax_canary_replicas = 0", "rollout.max_canary_replicas: 0 is out of range"),
    ("interval_s = 10", "interval_s = 10\nmax_canary_replicas = 51", "rollout.max_canary_replicas: 51 is out of rang"),
])
def test_bad_rollout_values_are_one_line_naming_the_key(project: Path, old: str, new: str, expected: str) -> None:
    text = CANARY.replace(old, new, 1)
    assert text != CANARY, f"case does not change the config: {old!r}"
    assert expected in _error(project, text)


def test_a_template_that_cannot_tell_the_versions_apart_is_refused(project: Path) -> None:
    text = CANARY.replace(',track="$track"', "")
    assert "does not select a track ($track)" in _error(project, text)


def test_a_progressive_rollout_without_metrics_is_judged_by_the_defaults_and_an_empty_list_is_refused(
        project: Path) -> None:
    text = CANARY.split("[[environments")[0]
    rollout = _cfg(project, text).env("dev").rollout
    assert [m.name for m in rollout.metrics] == ["error-ratio", "p95-latency"] and rollout.requests == REQUESTS
    assert "a canary rollout needs at least one metric" in _error(project, text + "metrics = []\n")


def test_query_errors_and_the_request_count_are_read_strictly(project: Path) -> None:
    text = CANARY.replace("interval_s = 10", 'interval_s = 10\nquery_error = "fail"\n'
                                             'requests = \'sum(increase(x{track="$track"}[$interval]))\'')
    rollout = _cfg(project, text).env("dev").rollout
    assert rollout.query_error == "fail" and rollout.requests == 'sum(increase(x{track="$track"}[$interval]))'
    assert "rollout.query_error: 'pass' is not allowed" in _error(
        project, CANARY.replace("interval_s = 10", 'interval_s = 10\nquery_error = "pass"'))
    assert "rollout.requests: does not select a track ($track)" in _error(
        project, CANARY.replace("interval_s = 10", "interval_s = 10\nrequests = 'sum(x[$interval])'"))
    assert "rollout.requests: unknown placeholder $intervall" in _error(
        project, CANARY.replace("interval_s = 10", "interval_s = 10\nrequests = 'x{track=\"$track\"}[$intervall]'"))


def test_load_is_bounded_and_aims_at_paths_only(project: Path) -> None:
    assert "rollout.load.rps: 500.0 is out of range" in _error(
        project, CANARY.replace("interval_s = 10", "interval_s = 10\nload = { rps = 500 }"))
    assert "'http://10.0.0.1/health' is not a path" in _error(
        project, CANARY.replace("interval_s = 10", 'interval_s = 10\nload = { paths = ["http://10.0.0.1/health"] }'))


def test_rendered_queries_escape_what_they_substitute() -> None:
    rule = MetricRule(name="m", query='up{service="$service",track="$track"}', max=1)
    assert rule.render(service='a"b\\c', track="canary") == 'up{service="a\\"b\\\\c",track="canary"}'
    assert promql_escape("x\ny") == "x\\ny"


def test_a_blue_green_is_read_with_its_durations_each_at_least_one_interval(project: Path) -> None:
    bg = CANARY.replace('"canary"', '"blue-green"').replace(
        "interval_s = 10", "interval_s = 10\npreview_analysis_s = 20\npost_promotion_analysis_s = 30\nkeep_old_s = 5")
    rollout = _cfg(project, bg).env("dev").rollout
    assert (rollout.strategy, rollout.preview_analysis_s, rollout.post_promotion_analysis_s, rollout.keep_old_s) == (
        "blue-green", 20, 30, 5)
    assert "rollout.post_promotion_analysis_s: 5 is shorter than interval_s (10)" in _error(
        project, bg.replace("post_promotion_analysis_s = 30", "post_promotion_analysis_s = 5"))


def test_deploy_refuses_a_canary_or_a_blue_green_without_prometheus(project: Path) -> None:
    from types import SimpleNamespace

    from pipeline.stages.rollout import DeployStage

    for rollout, needle in ((CANARY, "rollout.strategy = 'canary' has no Prometheus"),
                            (CANARY.replace('"canary"', '"blue-green"'),
                             "rollout.strategy = 'blue-green' has no Prometheus")):
        env = _cfg(project, rollout).env("dev")
        with pytest.raises(UsageError) as info:   # exit 2, before the cluster is touched
            DeployStage().preflight(SimpleNamespace(env=env))  # type: ignore[arg-type]
        assert info.value.exit_code == 2 and needle in info.value.one_line()
