"""server/loop_metrics.py: the same exposition as prometheus_client's own Counter, Gauge
and Histogram given the same changes."""

import random

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from server.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LABELS = ("adapter", "version", "arm")


def test_counters_gauges_and_histograms_expose_as_prometheus_client_does() -> None:
    disable_created_metrics()  # as server/metrics.py does
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    c_ours = LoopCounter("x_requests_total", "Requests.", [*LABELS, "status"], ours)
    c_theirs = Counter("x_requests_total", "Requests.", [*LABELS, "status"], registry=theirs)
    g_ours = LoopCounter("x_in_flight", "Now.", LABELS, ours, kind="gauge")
    g_theirs = Gauge("x_in_flight", "Now.", LABELS, registry=theirs)
    h_ours = LoopHistogram("x_seconds", "Latency.", LABELS, ours, BUCKETS)
    h_theirs = Histogram("x_seconds", "Latency.", LABELS, buckets=BUCKETS, registry=theirs)
    rng = random.Random(7)
    amounts = [0.0, 0.005, 0.0051, 1, 1.0000001, 120, 121, 1e9, -1.0]  # edges, past the last
    amounts += [rng.expovariate(2.0) for _ in range(500)]
    for i, amount in enumerate(amounts):
        labels = ("triage", str(i % 3), "stable" if i % 2 else "canary")
        c_ours.labels(*labels, "200").inc()
        c_theirs.labels(*labels, "200").inc()
        c_ours.labels(*labels, "429").inc(2)
        c_theirs.labels(*labels, "429").inc(2)
        g_ours.labels(*labels).inc()
        g_theirs.labels(*labels).inc()
        if i % 4:
            g_ours.labels(*labels).dec()
            g_theirs.labels(*labels).dec()
        h_ours.labels(*labels).observe(amount)
        h_theirs.labels(*labels).observe(amount)
    g_ours.labels("quiet", "1", "stable")  # a child at 0 from its first use
    g_theirs.labels("quiet", "1", "stable")
    assert generate_latest(ours) == generate_latest(theirs)


def test_a_child_is_created_once_and_the_label_count_is_checked() -> None:
    family = LoopCounter("y_total", "Y.", LABELS, CollectorRegistry())
    assert family.labels("a", "1", "stable") is family.labels("a", "1", "stable")
    with pytest.raises(ValueError, match="takes labels"):
        family.labels("a", "1")


def test_a_name_registered_twice_is_refused() -> None:
    registry = CollectorRegistry()
    LoopCounter("z_total", "Z.", LABELS, registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("z_total", "Z.", LABELS, registry=registry)
