"""Metric families for the request path: plain numbers, changed on the event loop's
thread only, turned into Prometheus samples when scraped.

prometheus_client's Counter, Gauge and Histogram check their labels and take a lock on
every change: three calls and a lock for one `inc`, six such changes per request. The
gateway changes these series only on its event loop, and reads them there (`/metrics`),
so a change here is one attribute updated, with no lock: about 20 of the 178 calls a
request then made (bench/hop_calls.py; bench/README.md, "A lean request path"). The
exposition is the same as prometheus_client's for the same series: names, labels, `le`
spelling, and a child at 0 from its first use.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class Cell:
    """One labelled child of a counter or gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class HistogramCell:
    """One labelled child of a histogram: a count per bucket (not cumulative) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # le: amount <= bound
        self.sum += amount


C = TypeVar("C", Cell, HistogramCell)


class _Family(Collector, Generic[C]):
    """A labelled family: its children (`labels`), each made by `_new` on first use."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._cells: dict[tuple[str, ...], C] = {}
        registry.register(self)

    def labels(self, *values: str) -> C:
        cell = self._cells.get(values)
        if cell is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            cell = self._cells[values] = self._new()
        return cell

    def describe(self) -> list[Metric]:
        return [self._empty()]

    def _new(self) -> C:
        raise NotImplementedError

    def _empty(self) -> Metric:
        raise NotImplementedError


class LoopCounter(_Family[Cell]):
    """A labelled counter (`kind` "counter") or gauge ("gauge")."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        kind: str = "counter",
    ) -> None:
        self.kind = kind
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> Cell:
        return Cell()

    def _empty(self) -> Metric:
        family = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        return family(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> list[Metric]:
        family = self._empty()
        for values, cell in list(self._cells.items()):
            family.add_metric(values, cell.value)  # type: ignore[attr-defined]
        return [family]


class LoopHistogram(_Family[HistogramCell]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets if b != float("inf")))
        # `le` spelt as prometheus_client spells it (untyped there)
        self._le = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> HistogramCell:
        return HistogramCell(self.bounds)

    def _empty(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, cell in list(self._cells.items()):
            running, buckets = 0, []
            for le, count in zip(self._le, cell.counts, strict=True):
                running += count
                buckets.append((le, float(running)))
            family.add_metric(values, buckets, cell.sum)
        return [family]
