"""Which Prometheus watches an environment, and whether it is up: observed each time, never remembered.

- **external**: `[environments.<env>.rollout] prometheus = "https://…"` names the operators' Prometheus; it is
  asked directly at that URL;
- **embedded**: `monitoring = "embedded"` (with `local_infra`, on the pipeline's own cluster) runs
  [infra.prometheus] as Deployment + Service `prometheus` in the release's namespace
  (pipeline/local/infra_prometheus.py); it is asked through a `kubectl port-forward` bound to 127.0.0.1, never a
  pod or cluster address directly;
- otherwise the environment has no monitoring the pipeline knows of ("none"), with the reason.

"Up" means Prometheus says it is ready (GET /-/ready); the scrape targets it sees (the `up` series) are
reported beside it, and which of the release's services are among the targets that answer (`up == 1`, by the
`service` label of the seed guide's relabelling), so "ready but scraping nothing" is visible.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import EMBEDDED_PROMETHEUS, Environment
from pipeline.core.errors import PipelineError, StageFailed, UsageError
from pipeline.tools import kubectl, prometheus


@dataclass(frozen=True)
class Monitoring:
    """One observation. source: embedded | external | none; where: the URL or `svc/prometheus in <ns>` (for none:
    why none); up: ready to answer queries; targets_up/targets: the `up` series equal to 1 / all of them (None:
    not asked); scraped/unscraped: the release's services among the targets up / not among them; problem: why
    it is not up ("" when up or none)."""

    source: str
    where: str
    up: bool
    targets_up: int | None = None
    targets: int | None = None
    problem: str = ""
    scraped: tuple[str, ...] = ()
    unscraped: tuple[str, ...] = ()

    def line(self) -> str:
        if self.source == "none":
            return f"monitoring: none ({self.where})"
        state = "up" if self.up else f"DOWN ({self.problem})"
        seen = "" if self.targets is None else f", {self.targets_up}/{self.targets} scrape target(s) up"
        if self.up and self.targets == 0:
            seen += " (it scrapes nothing: no pod discovered)"
        if self.scraped:
            seen += f"; scraping {', '.join(self.scraped)}"
        if self.up and self.unscraped:
            seen += f"; NOT scraping {', '.join(self.unscraped)} (yet: a new pod is scraped within a few seconds)"
        return f"monitoring: {self.source} Prometheus at {self.where}: {state}{seen}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def source(env: Environment, *, external_cluster: bool = False) -> str:
    """external | embedded | none for `env` (see the module's docstring); `external_cluster`: env deploys to a
    cluster other than the pipeline's own (no local infra runs there)."""
    if env.rollout.prometheus:
        return "external"
    if env.monitoring == "embedded" and env.local_infra and not external_cluster:
        return "embedded"
    return "none"


def _none_reason(env: Environment) -> str:
    if env.monitoring == "embedded":
        return "monitoring = \"embedded\" runs only on the pipeline's own cluster; this one is external: " \
               "name its Prometheus with rollout.prometheus = URL"
    return "no rollout.prometheus URL and monitoring is not \"embedded\" for this environment"


@contextmanager
def prometheus_url(env: Environment, *, kubeconfig: Path | None = None) -> Iterator[str]:
    """The base URL to query `env`'s Prometheus at while the block runs: the external URL, or the loopback end
    of a port-forward to svc/prometheus in env's namespace (closed when the block ends; `kubeconfig` overrides the
    environment's). UsageError when `env` has none; StageFailed when the Service is missing or the
    port-forward cannot start."""
    from pipeline.stages.deploy.target import ReleaseTarget

    if env.rollout.prometheus:
        yield env.rollout.prometheus
        return
    rt = ReleaseTarget.of(env, kubeconfig) if env.monitoring == "embedded" else None
    if rt is None or source(env, external_cluster=rt.external) == "none":
        raise UsageError(f"environment {env.name} has no Prometheus to judge a rollout with ({_none_reason(env)})",
                         f"set [environments.{env.name}.rollout] prometheus = URL, or monitoring = \"embedded\" "
                         "with local_infra = true")
    svc = kubectl.get_json(rt.kube, "service", EMBEDDED_PROMETHEUS, ignore_not_found=True)
    ports = ((svc or {}).get("spec") or {}).get("ports") or []
    if not ports:
        raise StageFailed(f"no Service {EMBEDDED_PROMETHEUS} in namespace {env.namespace}",
                          f"deploy it: invoke deploy --env {env.name} (it runs the local infra)")
    with kubectl.port_forward(rt.kube, f"svc/{EMBEDDED_PROMETHEUS}", int(ports[0]["port"])) as local:
        yield f"http://127.0.0.1:{local}"


def observe_monitoring(env: Environment, *, services: Sequence[str] = (), kubeconfig: Path | None = None,
                       external_cluster: bool = False) -> Monitoring:
    """Ask `env`'s Prometheus whether it is ready, how many of its scrape targets are up, and which of `services`
    (the release's service names) are among the targets up (a few seconds at most: the port-forward's start,
    3 s for readiness, 5 s for the query)."""
    kind = source(env, external_cluster=external_cluster)
    if kind == "none":
        return Monitoring("none", _none_reason(env), False)
    where = env.rollout.prometheus if kind == "external" else f"svc/{EMBEDDED_PROMETHEUS} in {env.namespace}"
    try:
        with prometheus_url(env, kubeconfig=kubeconfig) as url:
            if not prometheus.ready(url):
                return Monitoring(kind, where, False, problem="not ready (GET /-/ready did not answer 200)")
            series = prometheus.query(url, "up", timeout_s=5)
    except PipelineError as exc:
        return Monitoring(kind, where, False, problem=exc.message)
    answering = {s.labels.get("service", "") for s in series if s.value == 1}
    return Monitoring(kind, where, True, sum(1 for s in series if s.value == 1), len(series),
                      scraped=tuple(s for s in services if s in answering),
                      unscraped=tuple(s for s in services if s not in answering))
