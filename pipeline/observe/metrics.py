"""Run metrics (stage durations, cache hits, retries) pushed to a Prometheus Pushgateway when one is named.

The gateway is named by VEZA_PUSHGATEWAY_URL (e.g. http://127.0.0.1:9091); without it nothing is pushed.
The push uses prometheus-client's `push_to_gateway` (PUT: replaces the group) with grouping key
job="veza_pipeline", env=<environment>, so each environment keeps its last run's metrics. Metric names follow
Prometheus' naming practice (https://prometheus.io/docs/practices/naming/): base units, `_seconds`.
A failed push never fails a release: `push_run_metrics` returns the error as one line for a warning.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

ENV_VAR = "VEZA_PUSHGATEWAY_URL"
JOB = "veza_pipeline"


@dataclass(frozen=True)
class StageTiming:
    """One stage of a run: name, status (ok, failed, resumed…), duration in seconds."""

    name: str
    status: str
    duration_s: float


def pushgateway_url(environ: Mapping[str, str] | None = None) -> str:
    """The Pushgateway to push to ("" = none): VEZA_PUSHGATEWAY_URL."""
    return (os.environ if environ is None else environ).get(ENV_VAR, "").strip()


def run_registry(run_id: str, status: str, duration_s: float, stages: Sequence[StageTiming], *, cache_hits: int,
                 retries: int, finished: float | None = None) -> CollectorRegistry:
    """The metrics of one run in a fresh registry (gauges: a push carries the last run's values)."""
    reg = CollectorRegistry()
    stage_g = Gauge("veza_pipeline_stage_duration_seconds", "Duration of each stage in the last run",
                    ["stage", "status"], registry=reg)
    for s in stages:
        stage_g.labels(stage=s.name, status=s.status).set(round(s.duration_s, 3))
    Gauge("veza_pipeline_run_duration_seconds", "Duration of the last run", ["run_id"],
          registry=reg).labels(run_id=run_id).set(round(duration_s, 3))
    Gauge("veza_pipeline_run_success", "1 when the last run succeeded, else 0", registry=reg).set(
        1 if status == "ok" else 0)
    Gauge("veza_pipeline_cache_hits", "Services whose work was reused in the last run", registry=reg).set(cache_hits)
    Gauge("veza_pipeline_retries", "Registry retries in the last run", registry=reg).set(retries)
    Gauge("veza_pipeline_run_finished_timestamp_seconds", "When the last run finished (Unix time)",
          registry=reg).set(finished if finished is not None else time.time())
    return reg


def push_run_metrics(url: str, env: str, registry: CollectorRegistry, *, timeout_s: float = 5.0) -> str:
    """Push to the gateway at `url` under job=veza_pipeline, env=<env>; returns "" or the error as one line."""
    try:
        push_to_gateway(url, job=JOB, registry=registry, grouping_key={"env": env}, timeout=timeout_s)
    except Exception as exc:   # network, HTTP errors: reported, never fatal
        return f"metrics not pushed to {url}: {type(exc).__name__}: {exc}"
    return ""
