"""`[environments.<env>.rollout]`: how a deploy reaches the new version, read strictly like every other table.

    [environments.staging.rollout]
    strategy = "canary"                 # "all-at-once" (default: helm upgrade, wait, verify) | "canary" | "blue-green"
    steps = [{ weight = 25, analysis_s = 60 }, { weight = 50, analysis_s = 60 }]
    interval_s = 15                     # one evaluation of every metric per interval
    window = "1m"                       # the range of rate()/increase() in the templates ($window)
    no_data = "abort"                   # a query that returns no sample: "abort" | "fail" (counts) | "pass"
    inconclusive = "abort"              # too little traffic, or no baseline to compare with: same choices
    query_error = "abort"               # Prometheus down or a query it refuses: "abort" | "fail" (counts); never pass
    failure_limit = 0                   # failed intervals tolerated per step; one more aborts
    min_requests = 20                   # requests an interval must see on the canary to be judged
    prometheus = ""                     # "" = the embedded Prometheus; else its http(s) URL
    router = "none"                     # "none": weight = replica ratio (reported as achieved) | "haproxy" | "nginx"
    max_canary_replicas = 4             # the canary's pods at most, whatever the weight asks (the achieved weight
                                        # is reported: 90% beside 1 stable pod gets 4/5 = 80% with this bound)
    requests = "sum(increase(http_requests_total{...}[$interval]))"   # the canary's requests in one interval,
                                        # held to min_requests (default: REQUESTS)

    [[environments.staging.rollout.metrics]]   # none listed: DEFAULT_METRICS (error ratio, p95 latency)
    name = "error-ratio"
    query = '''sum(rate(http_requests_total{service="$service",track="$track",code=~"5.."}[$window]))
             / sum(rate(http_requests_total{service="$service",track="$track"}[$window]))'''
    max = 0.05                          # the canary's value must not exceed it
    baseline_margin = 0.02              # nor the stable version's value + this (and/or baseline_ratio ×)

The default templates read the Veza services' own series (services/*/kit/kit.go, chat-server's main.rs):
`http_requests_total{method,route,code}` and `http_request_duration_seconds_bucket{route,le}`; `namespace`,
`service` and `track` are the target labels Prometheus adds from the pod (k8s/prometheus-config.yaml relabels
the pod labels app.kubernetes.io/name and veza.io/track). Prometheus's own scrapes of /metrics are left out, so a
service nobody calls is not judged on its scrapes.

Templates are PromQL with `$name` placeholders (Python's string.Template syntax, which PromQL never uses): the
values substituted are names the pipeline controls, escaped as PromQL string-literal content (the rules of Go's
double-quoted strings, which PromQL follows: https://prometheus.io/docs/prometheus/latest/querying/basics/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from string import Template
from urllib.parse import urlsplit

from pipeline.core.config_reader import Table, check_name, type_name

STRATEGIES = ("all-at-once", "canary", "blue-green")
OUTCOME_POLICIES = ("abort", "fail", "pass")   # for no data and for inconclusive intervals
QUERY_ERROR_POLICIES = ("abort", "fail")       # an unanswered or refused query is never a pass
ROUTERS = ("none", "haproxy", "nginx")
PLACEHOLDERS = ("namespace", "service", "track", "window", "release", "interval")   # $interval: interval_s, "15s"
# PromQL's duration grammar (a number and a unit; compound forms such as 1h30m are also accepted by Prometheus).
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


@dataclass(frozen=True)
class Step:
    weight: int           # per cent of the pods (or, with a router, of the requests) on the new version
    analysis_s: int       # how long the metrics are judged at this weight


@dataclass(frozen=True)
class MetricRule:
    name: str
    query: str                          # PromQL template with $placeholders (PLACEHOLDERS)
    max: float | None = None            # the value must be <= max
    min: float | None = None            # the value must be >= min (e.g. a success ratio)
    baseline_ratio: float | None = None   # canary <= ratio × baseline (+ margin)
    baseline_margin: float | None = None  # canary <= baseline + margin (× ratio when both)

    @property
    def compares_baseline(self) -> bool:
        return self.baseline_ratio is not None or self.baseline_margin is not None

    def render(self, **values: str) -> str:
        """The query with its placeholders filled. Each value is escaped for a PromQL double-quoted string
        (backslash and quote); a placeholder without a value raises KeyError (checked at load, so a bug)."""
        return Template(self.query).substitute({k: promql_escape(v) for k, v in values.items()})


# The services' series, selected by the target labels the scrape configuration adds (module docstring).
_SELECT = 'namespace="$namespace",service="$service",track="$track",route!="/metrics"'
REQUESTS = f"sum(increase(http_requests_total{{{_SELECT}}}[$interval]))"
DEFAULT_METRICS = (
    # a version that never answered 5xx has no such series at all: `or vector(0)` makes its ratio 0, while a version
    # with no traffic still has no sample (an empty denominator), which the no_data policy judges
    MetricRule(name="error-ratio", max=0.05, baseline_margin=0.02,
               query=f'(sum(rate(http_requests_total{{{_SELECT},code=~"5.."}}[$window])) or vector(0)) / '
                     f"sum(rate(http_requests_total{{{_SELECT}}}[$window]))"),
    MetricRule(name="p95-latency", max=0.5, baseline_ratio=1.5, baseline_margin=0.05,
               query="histogram_quantile(0.95, sum by (le) "
                     f"(rate(http_request_duration_seconds_bucket{{{_SELECT}}}[$window])))"),
)


@dataclass(frozen=True)
class Load:
    rps: float = 5.0              # requests per second the loop sends to each track (bounded below)
    paths: tuple[str, ...] = ("/health",)
    max_requests: int = 2000      # hard bound per analysis step, whatever the duration


@dataclass(frozen=True)
class Rollout:
    strategy: str = "all-at-once"
    steps: tuple[Step, ...] = ()
    interval_s: int = 15
    window: str = "1m"
    no_data: str = "abort"
    inconclusive: str = "abort"
    query_error: str = "abort"
    failure_limit: int = 0
    min_requests: int = 20
    prometheus: str = ""
    router: str = "none"
    max_canary_replicas: int = 4        # bound on the canary's pods per service (replica-ratio weights)
    metrics: tuple[MetricRule, ...] = ()
    requests: str = REQUESTS            # PromQL template: the canary's requests in one interval (min_requests)
    load: Load = field(default_factory=Load)
    preview_analysis_s: int = 60        # blue-green: judged on the preview Service before the switch
    post_promotion_analysis_s: int = 60  # blue-green: judged after the switch; a failure switches back
    keep_old_s: int = 300               # blue-green: how long the old version stays, ready to switch back

    @property
    def progressive(self) -> bool:
        return self.strategy != "all-at-once"


MAX_RPS = 50.0
MAX_CANARY_REPLICAS = 50   # a canary is a sample of the new version beside the stable one, not a second fleet


def duration_s(value: str) -> float:
    """A PromQL duration ("30s", "1m", "1h30m") in seconds (Prometheus's units; a year is 365 days).
    ValueError for anything else (read_rollout has checked the window already)."""
    if not _DURATION.fullmatch(value):
        raise ValueError(f"{value!r} is not a PromQL duration")
    return sum(int(n) * _UNIT_S[unit] for n, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", value))


def promql_escape(value: str) -> str:
    """`value` as the content of a PromQL double-quoted string literal: backslash and '"' escaped, newlines
    written as \\n (PromQL string literals follow Go's escaping)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def read_rollout(et: Table) -> Rollout:
    """The optional `rollout` table of an environment (absent: all-at-once). ConfigError naming the key for a
    bad strategy, step, duration, URL, template placeholder or threshold."""
    if "rollout" not in et.data:
        et.used.add("rollout")
        return Rollout()
    t = et.table("rollout")
    strategy = t.text("strategy", "all-at-once", choices=STRATEGIES)
    rollout = Rollout(
        strategy=strategy,
        steps=_steps(t, required=strategy == "canary"),
        interval_s=t.integer("interval_s", 15, lo=1, hi=3600),
        window=_duration(t, "window", "1m"),
        no_data=t.text("no_data", "abort", choices=OUTCOME_POLICIES),
        inconclusive=t.text("inconclusive", "abort", choices=OUTCOME_POLICIES),
        query_error=t.text("query_error", "abort", choices=QUERY_ERROR_POLICIES),
        failure_limit=t.integer("failure_limit", 0, lo=0, hi=100),
        min_requests=t.integer("min_requests", 20, lo=0, hi=10**6),
        prometheus=_url(t, "prometheus"),
        router=t.text("router", "none", choices=ROUTERS),
        max_canary_replicas=t.integer("max_canary_replicas", 4, lo=1, hi=MAX_CANARY_REPLICAS),
        metrics=_metrics(t),
        requests=_requests(t),
        load=_load(t),
        preview_analysis_s=t.integer("preview_analysis_s", 60, lo=1, hi=86400),
        post_promotion_analysis_s=t.integer("post_promotion_analysis_s", 60, lo=1, hi=86400),
        keep_old_s=t.integer("keep_old_s", 300, lo=0, hi=7 * 86400),
    )
    if rollout.progressive and not rollout.metrics:
        t.fail(t.key("metrics"), f"a {strategy} rollout needs at least one metric to judge it",
               f"add a [[{t.key('metrics')}]] table (README, \"Progressive delivery\")")
    if rollout.progressive and rollout.steps and min(s.analysis_s for s in rollout.steps) < rollout.interval_s:
        t.fail(t.key("steps"), f"a step's analysis_s is shorter than interval_s ({rollout.interval_s})",
               "make every analysis_s at least one interval")
    if strategy == "blue-green":
        for key in ("preview_analysis_s", "post_promotion_analysis_s"):
            if getattr(rollout, key) < rollout.interval_s:
                t.fail(t.key(key), f"{getattr(rollout, key)} is shorter than interval_s ({rollout.interval_s})",
                       "make it at least one interval")
    t.done()
    return rollout


def _steps(t: Table, *, required: bool) -> tuple[Step, ...]:
    t.used.add("steps")
    raw = t.data.get("steps")
    if raw is None:
        if required:
            t.fail(t.key("steps"), "missing", 'add steps = [{ weight = 25, analysis_s = 60 }]')
        return ()
    if not isinstance(raw, list) or not raw:
        t.fail(t.key("steps"), f"expected a non-empty list of tables, got {type_name(raw)}",
               'write steps = [{ weight = 25, analysis_s = 60 }]')
    steps: list[Step] = []
    for i, item in enumerate(raw):
        st = Table(t.file, f"{t.key('steps')}[{i}]", item)
        step = Step(weight=st.integer("weight", lo=1, hi=99), analysis_s=st.integer("analysis_s", lo=1, hi=86400))
        st.done()
        if steps and step.weight <= steps[-1].weight:
            st.fail(st.key("weight"), f"{step.weight} does not grow after {steps[-1].weight}",
                    "list the steps by increasing weight (promotion to 100 follows the last one)")
        steps.append(step)
    return tuple(steps)


def _metrics(t: Table) -> tuple[MetricRule, ...]:
    t.used.add("metrics")
    if "metrics" not in t.data:
        return DEFAULT_METRICS
    raw = t.data["metrics"]
    if not isinstance(raw, list):
        t.fail(t.key("metrics"), f"expected an array of tables, got {type_name(raw)}", "write [[...metrics]] blocks")
    rules: list[MetricRule] = []
    for i, item in enumerate(raw):
        mt = Table(t.file, f"{t.key('metrics')}[{i}]", item)
        name = mt.text("name")
        check_name(mt, mt.key("name"), name)
        if any(r.name == name for r in rules):
            mt.fail(mt.key("name"), f"metric '{name}' is defined twice", "give each metric its own name")
        query = mt.text("query")
        _check_template(mt, query)
        rule = MetricRule(name=name, query=query, max=_opt_number(mt, "max"), min=_opt_number(mt, "min"),
                          baseline_ratio=_opt_number(mt, "baseline_ratio"),
                          baseline_margin=_opt_number(mt, "baseline_margin"))
        if rule.max is None and rule.min is None and not rule.compares_baseline:
            mt.fail(mt.key("name"), f"metric '{name}' has no threshold",
                    "set max, min, baseline_ratio or baseline_margin")
        if rule.max is not None and rule.min is not None and rule.min > rule.max:
            mt.fail(mt.key("min"), f"{rule.min} is above max {rule.max}", "make min <= max")
        mt.done()
        rules.append(rule)
    return tuple(rules)


def _requests(t: Table) -> str:
    query = t.text("requests", REQUESTS)
    _check_template(t, query, key="requests")
    return query


def _check_template(mt: Table, query: str, key: str = "query") -> None:
    template = Template(query)
    if not template.is_valid():
        mt.fail(mt.key(key), "has a '$' that is not a placeholder",
                f"write $$ for a literal dollar; placeholders: {', '.join('$' + p for p in PLACEHOLDERS)}")
    unknown = sorted(set(template.get_identifiers()) - set(PLACEHOLDERS))
    if unknown:
        mt.fail(mt.key(key), f"unknown placeholder ${unknown[0]}",
                f"use only {', '.join('$' + p for p in PLACEHOLDERS)}")
    if "track" not in template.get_identifiers():
        mt.fail(mt.key(key), "does not select a track ($track)",
                'filter by track="$track" so the new and the stable version are judged apart')


def _opt_number(t: Table, name: str) -> float | None:
    if name not in t.data:
        t.used.add(name)
        return None
    return t.number(name)


def _duration(t: Table, name: str, default: str) -> str:
    value = t.text(name, default)
    if not _DURATION.fullmatch(value):
        t.fail(t.key(name), f"'{value}' is not a PromQL duration", 'write e.g. "30s", "1m" or "5m"')
    return value


def _url(t: Table, name: str) -> str:
    value = t.text(name, "")
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            t.fail(t.key(name), f"'{value}' is not an http(s) URL",
                   'write e.g. "https://prometheus.example.org:9090", or "" for the embedded one')
    return value.rstrip("/")


def _load(t: Table) -> Load:
    if "load" not in t.data:
        t.used.add("load")
        return Load()
    lt = t.table("load")
    load = Load(rps=lt.number("rps", 5.0), paths=lt.texts("paths", ("/health",)),
                max_requests=lt.integer("max_requests", 2000, lo=1, hi=100_000))
    if not 0 < load.rps <= MAX_RPS:
        lt.fail(lt.key("rps"), f"{load.rps} is out of range", f"use a rate above 0 and at most {MAX_RPS:g}")
    for p in load.paths:
        if not p.startswith("/") or "://" in p:
            lt.fail(lt.key("paths"), f"'{p}' is not a path", 'write paths such as "/health" (the target is always '
                    "the loopback end of a port-forward)")
    lt.done()
    return load
