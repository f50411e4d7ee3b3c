"""Which Prometheus watches an environment, and whether it is up: observed each time, never remembered.

- **external**: `[environments.<env>.rollout] prometheus = "https://…"` names the operators' Prometheus; it is
  asked directly at that URL;
- otherwise the environment has no monitoring the pipeline knows of ("none"). A Prometheus the pipeline runs
  itself on its embedded cluster is not here yet: its pod discovery needs an API server address pods can reach,
  and the embedded cluster's listens on 127.0.0.1 only (README, "Monitoring").

"Up" means Prometheus says it is ready (GET /-/ready); the scrape targets it sees (the `up` series) are
reported beside it, so "ready but scraping nothing" is visible.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.core.config import Environment
from pipeline.core.errors import PipelineError, UsageError
from pipeline.tools import prometheus


@dataclass(frozen=True)
class Monitoring:
    """One observation. source: external | none; where: the URL or `svc/prometheus in <ns>`;
    up: ready to answer queries; targets_up/targets: the `up` series equal to 1 / all of them (None: not asked);
    problem: why it is not up ("" when up or none)."""

    source: str
    where: str
    up: bool
    targets_up: int | None = None
    targets: int | None = None
    problem: str = ""

    def line(self) -> str:
        if self.source == "none":
            return "monitoring: none (no rollout.prometheus URL for this environment)"
        state = "up" if self.up else f"DOWN ({self.problem})"
        seen = "" if self.targets is None else f", {self.targets_up}/{self.targets} scrape target(s) up"
        if self.up and self.targets == 0:
            seen += " (it scrapes nothing: no pod discovered)"
        return f"monitoring: {self.source} Prometheus at {self.where}: {state}{seen}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def source(env: Environment) -> str:
    """external | none for `env` (see the module's docstring)."""
    return "external" if env.rollout.prometheus else "none"


@contextmanager
def prometheus_url(env: Environment) -> Iterator[str]:
    """The base URL to query `env`'s Prometheus at while the block runs (the external URL). UsageError when `env`
    has none."""
    if source(env) == "none":
        raise UsageError(f"environment {env.name} has no Prometheus to judge a rollout with",
                         f"set [environments.{env.name}.rollout] prometheus = URL")
    yield env.rollout.prometheus


def observe_monitoring(env: Environment) -> Monitoring:
    """Ask `env`'s Prometheus whether it is ready and how many of its scrape targets are up (a few seconds at
    most: 3 s for readiness, 5 s for the query)."""
    kind = source(env)
    if kind == "none":
        return Monitoring("none", "", False)
    where = env.rollout.prometheus
    try:
        with prometheus_url(env) as url:
            if not prometheus.ready(url):
                return Monitoring(kind, where, False, problem="not ready (GET /-/ready did not answer 200)")
            series = prometheus.query(url, "up", timeout_s=5)
    except PipelineError as exc:
        return Monitoring(kind, where, False, problem=exc.message)
    return Monitoring(kind, where, True, sum(1 for s in series if s.value == 1), len(series))
