"""A :class:`deploy.source.MetricsSource` over Prometheus's HTTP API (PromQL).

For each arm, over a window of the rollout's interval: requests and 5xx answers (the
growth of ``loraport_requests_total``), JSON-contract failures (of
``loraport_structured_output_failures_total``), degenerate answers (of
``loraport_degenerate_answers_total``) and the p95 latency (``histogram_quantile`` over
the growth of ``loraport_request_duration_seconds_bucket``), summed over every gateway
Prometheus scrapes. An empty vector means no such requests (0), except for p95 and for
degenerate answers, where it means unknown (NaN): a gateway counts degenerate answers
from 0 for every series it has requests for, so a missing count is a gateway that does
not count them. For the same reason the degenerate figure is unknown when any scraped
instance has the arm's requests but not its degenerate count (a sum over some replicas
only would undercount). An unreachable server, an error status or a body that is not
Prometheus's JSON is :class:`MetricsUnavailable`, never a figure.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from deploy.decision import ArmFigures
from deploy.source import ArmRef, MetricsUnavailable


def _selector(arm: ArmRef, extra: str = "") -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in arm.labels().items())
    return "{" + labels + extra + "}"


def _delta(selector: str, offset: str, by: str = "") -> str:
    """How much the summed counter grew over the window, a series born inside it
    counted from zero (``increase`` drops a new series' first sample, and a canary's
    series are born when the rollout starts); a reset counts as no growth (a hold)."""
    now = f"sum{by} ({selector})"
    before = f"sum{by} ({selector} offset {offset})"
    return f"clamp_min({now} - ({before} or {now} * 0), 0)"


def queries(arm: ArmRef, window_s: float) -> dict[str, str]:
    """The PromQL this source runs for one arm (exposed for tests and docs)."""
    w = f"{max(1, round(window_s * 1000))}ms"
    sel = _selector(arm)
    failed = _selector(arm, ',status=~"5.."')
    buckets = _delta(f"loraport_request_duration_seconds_bucket{sel}", w, " by (le)")
    requests, degenerate = (
        f"loraport_requests_total{sel}",
        f"loraport_degenerate_answers_total{sel}",
    )
    return {
        "requests": _delta(requests, w),
        "errors": _delta(f"loraport_requests_total{failed}", w),
        "json_violations": _delta(f"loraport_structured_output_failures_total{sel}", w),
        "degenerate": _delta(degenerate, w),
        # instances with the arm's requests but no degenerate count (empty: none)
        "uncounted": f"count(count by (instance) ({requests}) "
        f"unless count by (instance) ({degenerate}))",
        "p95_s": f"histogram_quantile(0.95, {buckets})",
    }


class PrometheusSource:
    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def describe(self) -> str:
        return f"prometheus {self.url}"

    def query(self, promql: str) -> float | None:
        """The instant query's single value; None for an empty vector."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(address, timeout=self.timeout_s) as response:
                raw = response.read(1 << 20)
        except urllib.error.HTTPError as e:
            raise MetricsUnavailable(f"{self.describe()} answered HTTP {e.code}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise MetricsUnavailable(f"{self.describe()} is unreachable: {e}") from None
        return _value(raw, self.describe())

    def figures(self, arms: list[ArmRef], window_s: float) -> list[ArmFigures | None]:
        out: list[ArmFigures | None] = []
        for arm in arms:
            got = {k: self.query(q) for k, q in queries(arm, window_s).items()}
            degenerate = got["degenerate"]
            if degenerate is None or got["uncounted"]:
                degenerate = math.nan
            out.append(
                ArmFigures(
                    requests=got["requests"] or 0.0,
                    errors=got["errors"] or 0.0,
                    json_violations=got["json_violations"] or 0.0,
                    degenerate=degenerate,
                    p95_s=math.nan if got["p95_s"] is None else got["p95_s"],
                )
            )
        return out


def _value(raw: bytes, source: str) -> float | None:
    try:
        body: Any = json.loads(raw)
        if body.get("status") != "success":
            raise MetricsUnavailable(f"{source} refused the query: {body.get('error')!r}")
        data = body["data"]
        if data["resultType"] != "vector":
            raise ValueError(f"resultType {data['resultType']!r}")
        result = data["result"]
        if not result:
            return None
        if len(result) != 1:
            raise ValueError(f"{len(result)} series where one sum was asked for")
        return float(result[0]["value"][1])
    except MetricsUnavailable:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise MetricsUnavailable(f"{source} answered something that is not PromQL: {e}") from None
