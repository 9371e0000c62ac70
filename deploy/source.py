"""Where a controller reads the arms' figures: the :class:`MetricsSource` protocol.

Two implementations: :class:`deploy.prometheus.PrometheusSource` (PromQL over HTTP) and
:class:`deploy.gateway_scrape.GatewayScrapeSource` (the gateways' own ``/metrics``, for
a setup without a Prometheus). Both read the gateway's series, labelled by adapter,
version and arm: ``loraport_requests_total`` (status 5xx = an error),
``loraport_structured_output_failures_total``, ``loraport_degenerate_answers_total`` and
``loraport_request_duration_seconds``. A gateway creates its degenerate-answer count at 0
for every series it records a request for, so where a gateway has requests but no such
count (a gateway older than the rule) the arm's degenerate figure is unknown (NaN: a
hold), never 0. A source that cannot answer (down, garbage) raises
:class:`MetricsUnavailable`; the controller then holds and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from deploy.decision import ArmFigures


class MetricsUnavailable(Exception):
    """The source could not be read or answered nonsense; the message says which."""


@dataclass(frozen=True)
class ArmRef:
    """One arm's series: adapter name, version and arm label."""

    name: str
    version: int
    arm: str

    def labels(self) -> dict[str, str]:
        return {"adapter": self.name, "version": str(self.version), "arm": self.arm}


class MetricsSource(Protocol):
    """Figures for each arm over the last ``window_s`` seconds."""

    def describe(self) -> str:
        """What this source reads, for analyses and messages (no secrets)."""
        ...

    def figures(self, arms: list[ArmRef], window_s: float) -> list[ArmFigures | None]:
        """One entry per arm, None where the source has no figures for it yet."""
        ...
