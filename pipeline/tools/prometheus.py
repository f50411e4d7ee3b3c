"""The Prometheus HTTP API (v1), read-only: instant and range queries, readiness. urllib, no client library:
the one PyPI client (prometheus-api-client) brings pandas and matplotlib for four JSON endpoints.

Shapes follow https://prometheus.io/docs/prometheus/latest/querying/api/: a response is
`{"status": "success"|"error", "data": {"resultType": "vector"|"matrix"|"scalar", "result": [...]},
"errorType": ..., "error": ...}`; sample values are strings ("1.5", "NaN", "+Inf"), read here as floats.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import StageFailed


class PrometheusUnavailable(StageFailed):
    """Prometheus did not answer (refused, timed out, 5xx, not ready): the analysis cannot judge."""


class PrometheusQueryError(StageFailed):
    """Prometheus refused the query (400 bad_data: a PromQL syntax error; 422: it could not be executed)."""


@dataclass(frozen=True)
class Series:
    """One series of a result: its labels and its (unix seconds, value) points (one point for an instant query)."""
    labels: dict[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def value(self) -> float:
        return self.points[-1][1]


def _get(base_url: str, path: str, params: dict[str, str], timeout_s: float) -> dict[str, Any]:
    url = f"{base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = {}
        if exc.code in (400, 422):
            raise PrometheusQueryError(f"Prometheus refused the query ({exc.code} {doc.get('errorType', '')}): "
                                       f"{doc.get('error', text[:300])}",
                                       "fix the metric's query template in pipeline.toml") from None
        raise PrometheusUnavailable(f"Prometheus at {base_url} answered {exc.code}",
                                    "check that it is up (`invoke status` shows monitoring)") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrometheusUnavailable(f"Prometheus at {base_url} did not answer: {reason}",
                                    "check that it is up (`invoke status` shows monitoring)") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusQueryError(f"Prometheus query failed: {body.get('error') if isinstance(body, dict) else body}",
                                   "fix the metric's query template in pipeline.toml")
    data = body.get("data")
    return data if isinstance(data, dict) else {}


def _series(data: dict[str, Any]) -> list[Series]:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return [Series({}, ((float(result[0]), float(result[1])),))]
    out: list[Series] = []
    for item in result if isinstance(result, list) else ():
        raw = item.get("values") or ([item["value"]] if "value" in item else [])
        out.append(Series(dict(item.get("metric") or {}), tuple((float(t), float(v)) for t, v in raw)))
    return out


def query(base_url: str, promql: str, *, at: float | None = None, timeout_s: float = 10.0) -> list[Series]:
    """An instant query (GET /api/v1/query) at unix time `at` (None: now). [] when it returns no sample."""
    params = {"query": promql, "timeout": f"{timeout_s:g}s"}
    if at is not None:
        params["time"] = f"{at:.3f}"
    return _series(_get(base_url, "/api/v1/query", params, timeout_s + 2))


def query_range(base_url: str, promql: str, start: float, end: float, step_s: float,
                *, timeout_s: float = 10.0) -> list[Series]:
    """A range query (GET /api/v1/query_range) from `start` to `end` (unix seconds) every `step_s` seconds."""
    params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}s",
              "timeout": f"{timeout_s:g}s"}
    return _series(_get(base_url, "/api/v1/query_range", params, timeout_s + 2))


def ready(base_url: str, *, timeout_s: float = 3.0) -> bool:
    """Whether Prometheus says it is ready to serve queries (GET /-/ready answers 200)."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/-/ready", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def single_value(series: list[Series]) -> float | None:
    """The value of a query meant to return one series (the templates aggregate with sum/histogram_quantile);
    None for no sample. Several series are an error in the template (it must aggregate them)."""
    if not series:
        return None
    if len(series) > 1:
        raise PrometheusQueryError(f"the query returned {len(series)} series, not one "
                                   f"(labels of the first two: {series[0].labels}, {series[1].labels})",
                                   "aggregate it, e.g. wrap it in sum(...) or sum by (le) (...)")
    return series[0].value


@dataclass(frozen=True)
class Client:
    """One Prometheus at `base_url`, asked for single values: what the rollout analysis needs of it."""
    base_url: str
    timeout_s: float = 10.0

    def value(self, promql: str, at: float) -> float | None:
        """The one value `promql` has at unix time `at` (seconds), None for no sample (single_value's rules).
        PrometheusUnavailable / PrometheusQueryError as query() raises them."""
        return single_value(query(self.base_url, promql, at=at, timeout_s=self.timeout_s))
