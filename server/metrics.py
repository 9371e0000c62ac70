"""The gateway's own Prometheus series, on a CollectorRegistry of its own.

Names are `loraport_<noun>_<unit>`. Label values come from bounded sets only: adapter
names and versions that exist in the registry (or `base`/`-` for the base model and
`unknown` for anything unresolved), arms (`stable`, `canary`), endpoint names,
HTTP status codes, error types, and configured backend indices. Never raw user input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from server.loop_metrics import Cell, HistogramCell, LoopCounter, LoopHistogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
COST_BUCKETS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SERIES = ("adapter", "version", "arm")
M = TypeVar("M", bound=MetricWrapperBase)


class Series(NamedTuple):
    """The labels one request is recorded under (a tuple: hashed in C, as the request
    path's lookups by series need)."""

    adapter: str
    version: str
    arm: str

    @classmethod
    def unknown(cls) -> Series:
        return cls("unknown", "-", "stable")

    def values(self) -> tuple[str, str, str]:
        return (self.adapter, self.version, self.arm)


@dataclass(frozen=True, slots=True)
class SeriesChildren:
    """The children one series' requests are recorded under, on one endpoint."""

    answered: Cell
    """`requests` with status 200."""
    latency: HistogramCell
    degenerate: Cell
    prompt_tokens: Cell
    completion_tokens: Cell


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` twin of every counter and histogram
        r = self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        self._series: dict[tuple[Series, str], SeriesChildren] = {}
        self.requests = LoopCounter(
            "loraport_requests_total",
            "Requests answered.",
            [*SERIES, "endpoint", "status"],
            r,
        )
        self.errors = Counter(
            "loraport_errors_total",
            "Requests that failed, by error type.",
            [*SERIES, "type"],
            registry=r,
        )
        self.latency = LoopHistogram(
            "loraport_request_duration_seconds",
            "End-to-end request latency.",
            [*SERIES, "endpoint"],
            r,
            LATENCY_BUCKETS,
        )
        self.ttft = Histogram(
            "loraport_time_to_first_token_seconds",
            "Streaming: time to the first token.",
            list(SERIES),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "loraport_time_per_output_token_seconds",
            "Streaming: time per output token after the first.",
            list(SERIES),
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = LoopCounter(
            "loraport_prompt_tokens_total", "Prompt tokens.", SERIES, r
        )
        self.completion_tokens = LoopCounter(
            "loraport_completion_tokens_total", "Completion tokens.", SERIES, r
        )
        self.in_flight = Gauge(
            "loraport_in_flight_requests", "Requests being served now.", registry=r
        )
        self.adapter_in_flight = LoopCounter(
            "loraport_adapter_in_flight_requests",
            "Requests being served now, by adapter version and arm.",
            SERIES,
            r,
            kind="gauge",
        )
        self.tokens_in_flight = Gauge(
            "loraport_tokens_in_flight",
            "Admitted work in tokens (estimated prompt + max_tokens, times n).",
            registry=r,
        )
        self.adapter_loads = Counter(
            "loraport_adapter_loads_total",
            "Adapter loads into a backend.",
            ["adapter", "version", "result"],
            registry=r,
        )
        self.adapter_evictions = Counter(
            "loraport_adapter_evictions_total",
            "Adapters unloaded by the LRU.",
            ["adapter", "version"],
            registry=r,
        )
        self.adapter_load_waits = Counter(
            "loraport_adapter_load_waits_total",
            "Requests that waited for their adapter to load on the backend they were sent "
            "to (not loaded there when they arrived); over all requests: the cold-load share.",
            ["adapter", "version"],
            registry=r,
        )
        self.adapter_load_seconds = Histogram(
            "loraport_adapter_load_duration_seconds",
            "Pull + load of a cold adapter.",
            ["adapter", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.structured_failures = Counter(
            "loraport_structured_output_failures_total",
            "Constrained results refused by the gateway's own validation.",
            [*SERIES, "reason"],
            registry=r,
        )
        self.degenerate_answers = LoopCounter(
            "loraport_degenerate_answers_total",
            "Answers returned that were degenerate (empty, or one short piece repeated); "
            "every series with requests has one, at 0 until the first.",
            SERIES,
            r,
        )
        self.quarantines = Counter(
            "loraport_quarantines_total",
            "Adapter versions this gateway quarantined (corrupted the engine, or answer "
            "degenerately while the base model does not).",
            ["adapter", "version"],
            registry=r,
        )
        self.backend_up = Gauge(
            "loraport_backend_up",
            "1 when the backend answers health checks.",
            ["backend"],
            registry=r,
        )
        self.backend_degraded = Gauge(
            "loraport_backend_degraded",
            "1 when the generation probe failed, timed out or produced degenerate output.",
            ["backend"],
            registry=r,
        )
        self.probe_failures = Counter(
            "loraport_probe_failures_total",
            "Readiness probes that failed, by reason "
            "(timeout, error, degenerate, changed, unhealthy).",
            ["backend", "reason"],
            registry=r,
        )
        self.backend_requests_running = Gauge(
            "loraport_backend_requests_running",
            "vLLM's own count of requests running (read at scrape time).",
            ["backend"],
            registry=r,
        )
        self.backend_requests_waiting = Gauge(
            "loraport_backend_requests_waiting",
            "vLLM's queue: requests waiting to be scheduled (read at scrape time).",
            ["backend"],
            registry=r,
        )
        self.backend_kv_cache_usage = Gauge(
            "loraport_backend_kv_cache_usage_ratio",
            "vLLM's KV-cache use, 0 to 1 (read at scrape time).",
            ["backend"],
            registry=r,
        )
        self.requests_rerouted = Counter(
            "loraport_requests_rerouted_total",
            "Requests sent again to another backend because this one could not be reached "
            "(connection refused, or closed before the request was written).",
            ["backend"],
            registry=r,
        )
        self.backend_restarts = Counter(
            "loraport_backend_restarts_total",
            "Local vLLM restarts after a crash.",
            ["backend"],
            registry=r,
        )
        self.cost = Histogram(
            "loraport_request_cost_dollars",
            "Estimated accelerator cost per request (latency share of the hourly price).",
            list(SERIES),
            buckets=COST_BUCKETS,
            registry=r,
        )
        self.registry_stale = Gauge(
            "loraport_registry_stale_seconds",
            "Seconds since the registry last answered while it does not (0 when it does): "
            "how stale the routes this gateway serves may be (read at scrape time).",
            registry=r,
        )

    def child(self, metric: M, *values: str) -> M:
        """`metric.labels(*values)`, looked up once: the request path records under a few
        bounded label sets, and prometheus_client's `labels()` checks and locks each
        time. Created on first use, as `labels()` creates it (a series shows from then);
        children are never removed from these metrics."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found  # type: ignore[return-value]

    def of(self, series: Series, endpoint: str) -> SeriesChildren:
        """The children a request of `series` on `endpoint` is recorded under, looked up
        once per pair (the request path's one lookup). Creating them shows the series at
        0 (its degenerate answers among them) from its first request."""
        found = self._series.get((series, endpoint))
        if found is None:
            s = series.values()
            found = self._series[(series, endpoint)] = SeriesChildren(
                answered=self.requests.labels(*s, endpoint, "200"),
                latency=self.latency.labels(*s, endpoint),
                degenerate=self.degenerate_answers.labels(*s),
                prompt_tokens=self.prompt_tokens.labels(*s),
                completion_tokens=self.completion_tokens.labels(*s),
            )
        return found

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
