"""What ``deploy run`` exposes on ``/metrics`` (``--metrics-port``): each active rollout's
state, read from the registry at every scan, for dashboards and the "rollout stuck"
alert. Label values are adapter names from the registry (bounded: names a person
pushed), never request input.

- ``loraport_rollout_active{adapter}``: 1 while a rollout of the name is active, then 0;
- ``loraport_rollout_canary_weight_percent{adapter}``: the canary's share now;
- ``loraport_rollout_step{adapter}``: the index of the current step;
- ``loraport_rollout_step_age_seconds{adapter}``: how long the current step has run (the
  registry's clock); far above ``loraport_rollout_interval_seconds`` means it holds;
- ``loraport_rollout_interval_seconds{adapter}``: the plan's interval;
- ``loraport_rollouts_ended_total{adapter,state}``: rollouts this process drove to an end;
- ``loraport_rollout_drivers``: rollouts this process drives now.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from deploy.controller import epoch
from deploy.plan import Plan
from registry import Rollout


class RolloutMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.active = Gauge("loraport_rollout_active", "1 while a rollout is active.",
                            ["adapter"], registry=r)  # fmt: skip
        self.weight = Gauge("loraport_rollout_canary_weight_percent",
                            "The canary's share of traffic now, in percent.", ["adapter"],
                            registry=r)  # fmt: skip
        self.step = Gauge("loraport_rollout_step", "Index of the current step.", ["adapter"],
                          registry=r)  # fmt: skip
        self.step_age = Gauge("loraport_rollout_step_age_seconds",
                              "How long the current step has run (registry clock).",
                              ["adapter"], registry=r)  # fmt: skip
        self.interval = Gauge("loraport_rollout_interval_seconds",
                              "The plan's analysis interval.", ["adapter"], registry=r)  # fmt: skip
        self.ended = Counter("loraport_rollouts_ended_total",
                             "Rollouts driven to an end by this controller.",
                             ["adapter", "state"], registry=r)  # fmt: skip
        self.drivers = Gauge("loraport_rollout_drivers", "Rollouts this controller drives now.",
                             registry=r)  # fmt: skip
        self._seen: set[str] = set()

    def observe(self, active: Iterable[Rollout], now: float, drivers: int) -> None:
        """Set every gauge from one scan's active rollouts (``now``: the registry's clock);
        names whose rollout ended drop to inactive, weight 0."""
        names = set()
        for r in active:
            names.add(r.name)
            self.active.labels(r.name).set(1)
            self.weight.labels(r.name).set(r.weight)
            self.step.labels(r.name).set(r.step)
            self.step_age.labels(r.name).set(max(0.0, now - epoch(r.step_started_at)))
            self.interval.labels(r.name).set(Plan.model_validate(r.plan).interval_s)
        for name in self._seen - names:
            self.active.labels(name).set(0)
            self.weight.labels(name).set(0)
            self.step_age.labels(name).set(0)
        self._seen |= names
        self.drivers.set(drivers)

    def count_end(self, rollout: Rollout) -> None:
        self.ended.labels(rollout.name, rollout.state).inc()
