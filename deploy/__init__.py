"""loraport's rollout controller: moves a canary through its steps, judges each step from
the gateways' figures (Prometheus, or the gateways' own /metrics), and promotes or rolls
back by writing to the registry, which every gateway reads within seconds.

- :mod:`deploy.decision`: the pure verdict (advance, hold, promote, roll back) of a step;
- :mod:`deploy.source`: the :class:`MetricsSource` protocol and its figures;
- :mod:`deploy.prometheus` and :mod:`deploy.gateway_scrape`: its two implementations;
- :mod:`deploy.controller`: the loop, resumable from the registry, one per rollout (lease);
- :mod:`deploy.supervisor`: ``deploy run``, a controller for every active rollout;
- :mod:`deploy.metrics`: the rollouts' state on ``deploy run``'s ``/metrics``;
- :mod:`deploy.cli`: ``deploy canary|run|status|promote|abort|history``.
"""
