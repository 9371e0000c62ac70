"""The registry service's own Prometheus figures (its own CollectorRegistry).

``op`` is an operation name from a fixed table (or ``other``), ``code`` an HTTP status:
both bounded, never raw client input.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


class ServiceMetrics:
    """Requests, latency and bytes of one ``registry serve`` process."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loraport_registry_requests_total",
            "Registry service requests, by operation and HTTP status.",
            ["op", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "loraport_registry_request_seconds",
            "Registry service request latency (a watch counts its wait).",
            ["op"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.bytes_in = Counter(
            "loraport_registry_received_bytes_total",
            "Request body bytes received (uploads and JSON).",
            registry=self.registry,
        )
        self.bytes_out = Counter(
            "loraport_registry_sent_bytes_total",
            "Blob bytes sent (pulls).",
            registry=self.registry,
        )

    def observe(self, op: str, code: str, seconds: float) -> None:
        self.requests.labels(op, code).inc()
        self.latency.labels(op).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
