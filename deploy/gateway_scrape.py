"""A :class:`deploy.source.MetricsSource` that scrapes the gateways' own ``/metrics``.

For a setup without a Prometheus: each call scrapes every given gateway, sums their
counters per arm, and answers the difference from the previous call (so the window is
the time between two calls, one interval of the controller). The first call only takes
the baseline and answers None for every arm (no data: the controller holds). A counter
that went down (a gateway restarted) counts from zero, as Prometheus's ``increase``
does. A gateway that is down or answers something that is not the text format is
:class:`MetricsUnavailable`: figures from some replicas only would be a biased sample.
For the same reason an arm's degenerate-answer figure is unknown (NaN) when any gateway
has requests for it but no ``loraport_degenerate_answers_total`` count (a gateway
creates that count at 0 with the arm's first request, so its absence means the gateway
does not count degenerate answers, not that there were none).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from deploy.decision import ArmFigures
from deploy.source import ArmRef, MetricsUnavailable

Key = tuple[str, str, str]  # adapter, version, arm


@dataclass
class Snapshot:
    """Summed counters of all gateways, per arm."""

    requests: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    errors: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    json_violations: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    degenerate: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    uncounted: set[Key] = field(default_factory=set)
    """Arms some gateway has requests for but no degenerate-answer count."""
    buckets: dict[Key, dict[float, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )


def parse(text: str, into: Snapshot) -> None:
    """Add one gateway's exposition to ``into``; ValueError if it is not the text format."""
    requested: set[Key] = set()
    counted: set[Key] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("adapter", ""), labels.get("version", ""), labels.get("arm", ""))
            if sample.name == "loraport_requests_total":
                requested.add(key)
                into.requests[key] += sample.value
                if labels.get("status", "").startswith("5"):
                    into.errors[key] += sample.value
            elif sample.name == "loraport_structured_output_failures_total":
                into.json_violations[key] += sample.value
            elif sample.name == "loraport_degenerate_answers_total":
                counted.add(key)
                into.degenerate[key] += sample.value
            elif sample.name == "loraport_request_duration_seconds_bucket":
                into.buckets[key][float(labels["le"])] += sample.value
    into.uncounted |= requested - counted


def _delta(now: float, before: float) -> float:
    return now - before if now >= before else now


def quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's ``histogram_quantile`` over cumulative buckets (le -> count)."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return math.nan
    total = buckets[bounds[-1]]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower_bound  # above the highest finite bucket
            width = count - lower_count
            share = (rank - lower_count) / width if width > 0 else 1.0
            return lower_bound + (le - lower_bound) * share
        lower_bound, lower_count = le, count
    return math.nan


class GatewayScrapeSource:
    def __init__(self, urls: list[str], *, timeout_s: float = 10.0) -> None:
        if not urls:
            raise ValueError("GatewayScrapeSource needs at least one gateway URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout_s = timeout_s
        self._previous: Snapshot | None = None

    def describe(self) -> str:
        return f"/metrics of {len(self.urls)} gateway(s)"

    def scrape(self) -> Snapshot:
        snap = Snapshot()
        for url in self.urls:
            try:
                with urllib.request.urlopen(f"{url}/metrics", timeout=self.timeout_s) as r:
                    text = r.read(16 << 20).decode("utf-8")
            except (urllib.error.URLError, OSError, TimeoutError, UnicodeDecodeError) as e:
                raise MetricsUnavailable(f"gateway {url} could not be scraped: {e}") from None
            try:
                parse(text, snap)
            except (ValueError, KeyError, TypeError) as e:
                raise MetricsUnavailable(
                    f"gateway {url}/metrics is not Prometheus text: {e}"
                ) from None
        return snap

    def figures(self, arms: list[ArmRef], window_s: float) -> list[ArmFigures | None]:
        now = self.scrape()
        before, self._previous = self._previous, now
        if before is None:
            return [None for _ in arms]
        out: list[ArmFigures | None] = []
        for arm in arms:
            key = (arm.name, str(arm.version), arm.arm)
            b_now, b_before = now.buckets.get(key, {}), before.buckets.get(key, {})
            buckets = {le: _delta(c, b_before.get(le, 0.0)) for le, c in b_now.items()}
            degenerate = math.nan
            if key in now.degenerate and key not in now.uncounted:
                degenerate = _delta(now.degenerate[key], before.degenerate.get(key, 0.0))
            out.append(
                ArmFigures(
                    requests=_delta(now.requests.get(key, 0.0), before.requests.get(key, 0.0)),
                    errors=_delta(now.errors.get(key, 0.0), before.errors.get(key, 0.0)),
                    json_violations=_delta(
                        now.json_violations.get(key, 0.0), before.json_violations.get(key, 0.0)
                    ),
                    degenerate=degenerate,
                    p95_s=quantile(0.95, buckets),
                )
            )
        return out
