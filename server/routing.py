"""Which backend serves a request: a pure function of what the gateway sees of each.

- Dead, degraded or drained backends (`open` false) are never chosen.
- The base model goes to the open backend with the fewest requests in flight.
- An adapter goes to the open backends that already hold it (loaded or loading, by the
  gateway's own view: vLLM's metrics forget idle adapters, vllm#45411), the least busy
  of them. When even that one has `spread_at` or more requests in flight and a backend
  that does not hold it has fewer, with room in its LRU, the adapter spreads there: the
  load is bounded by an in-flight count, not by chance.
- An adapter nobody holds goes where the LRU has a free slot (the least busy such
  backend), else where a slot can be freed by evicting an idle adapter, else to the
  least busy backend (whose slots all serve requests: it answers 429).

Ties go to the backend listed first, so one backend behaves as before.

`least-loaded` (`GATEWAY_ROUTING`) is the plain policy to compare against: the open
backend with the fewest requests in flight, whatever each holds (bench/scaleout.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

RoutingPolicy = Literal["affinity", "least-loaded"]


@dataclass(frozen=True)
class BackendView:
    """One backend as the router sees it, for one request's adapter."""

    open: bool
    """Ready (answering, not degraded) and not drained for a check of its engine."""
    in_flight: int
    holds: bool = False
    """The request's adapter is loaded there, or loading."""
    free_slots: int = 0
    """LRU slots free without evicting anything."""
    evictable: bool = False
    """A slot can be freed: it holds an adapter that serves no request."""

    @property
    def room(self) -> bool:
        return self.free_slots > 0 or self.evictable


def route(
    policy: RoutingPolicy, backends: Sequence[BackendView], adapter: bool, spread_at: int
) -> int | None:
    """The backend `policy` picks: `affinity` (`choose`) or `least-loaded`."""
    if policy == "least-loaded":
        return least_loaded(backends)
    return choose(backends, adapter, spread_at)


def least_loaded(backends: Sequence[BackendView]) -> int | None:
    """The open backend with the fewest requests in flight (ties: the first listed),
    blind to what each holds; None when none is open."""
    candidates = [i for i, b in enumerate(backends) if b.open]
    return min(candidates, key=lambda i: (backends[i].in_flight, i)) if candidates else None


def choose(backends: Sequence[BackendView], adapter: bool, spread_at: int) -> int | None:
    """The index of the backend to send the request to, or None when none is open.
    `adapter`: the request names an adapter (False: the base model)."""
    candidates = [i for i, b in enumerate(backends) if b.open]
    if not candidates:
        return None

    def least_busy(indexes: list[int]) -> int:
        return min(indexes, key=lambda i: (backends[i].in_flight, i))

    if not adapter:
        return least_busy(candidates)
    holders = [i for i in candidates if backends[i].holds]
    if holders:
        best = least_busy(holders)
        busy = backends[best].in_flight
        if busy < spread_at:
            return best
        spare = [
            i
            for i in candidates
            if not backends[i].holds and backends[i].room and backends[i].in_flight < busy
        ]
        return _roomiest(backends, spare) if spare else best
    with_room = [i for i in candidates if backends[i].room]
    return _roomiest(backends, with_room) if with_room else least_busy(candidates)


def _roomiest(backends: Sequence[BackendView], indexes: list[int]) -> int:
    """A free slot before an eviction, then the fewest in flight, then the most free slots."""
    return min(
        indexes,
        key=lambda i: (
            backends[i].free_slots == 0,
            backends[i].in_flight,
            -backends[i].free_slots,
            i,
        ),
    )
