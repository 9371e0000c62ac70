"""The backend choice (server/routing.py), table-driven: pure, no processes."""

from __future__ import annotations

import pytest

from server.routing import BackendView, RoutingPolicy, choose, route

SPREAD = 4


def b(
    in_flight: int = 0,
    *,
    holds: bool = False,
    free: int = 4,
    evictable: bool = False,
    open: bool = True,
) -> BackendView:
    return BackendView(open, in_flight, holds, free, evictable)


CASES = [
    # (why, backends, adapter?, chosen)
    ("no backend at all", [], True, None),
    ("every backend dead", [b(open=False), b(open=False)], False, None),
    ("one backend: the embedded default", [b(3)], False, 0),
    ("base: the least busy", [b(2), b(1)], False, 1),
    ("base: a tie goes to the first listed", [b(1), b(1)], False, 0),
    ("base: a dead backend never, however idle", [b(0, open=False), b(9)], False, 1),
    ("adapter: its holder, though busier", [b(0), b(2, holds=True)], True, 1),
    ("adapter: the least busy holder", [b(3, holds=True), b(1, holds=True)], True, 1),
    ("adapter: a dead holder is not chosen", [b(0, holds=True, open=False), b(2)], True, 1),
    (
        "hot adapter: holder at the bound spreads to a less busy backend with room",
        [b(SPREAD, holds=True), b(1)],
        True,
        1,
    ),
    (
        "hot adapter: holder just under the bound keeps it",
        [b(SPREAD - 1, holds=True), b(0)],
        True,
        0,
    ),
    (
        "hot adapter: no spread to a backend as busy as the holder",
        [b(SPREAD, holds=True), b(SPREAD)],
        True,
        0,
    ),
    (
        "hot adapter: no spread to a backend whose slots all serve requests",
        [b(SPREAD, holds=True), b(0, free=0, evictable=False)],
        True,
        0,
    ),
    (
        "hot adapter: spreads to one that can evict an idle adapter",
        [b(SPREAD, holds=True), b(0, free=0, evictable=True)],
        True,
        1,
    ),
    (
        "hot adapter: a free slot before an eviction",
        [b(SPREAD + 2, holds=True), b(0, free=0, evictable=True), b(1, free=1)],
        True,
        2,
    ),
    (
        "hot adapter: held by two, the less busy holder is under the bound",
        [b(SPREAD + 5, holds=True), b(SPREAD - 1, holds=True), b(0)],
        True,
        1,
    ),
    (
        "cold adapter: where the LRU has a free slot",
        [b(0, free=0, evictable=True), b(3, free=2)],
        True,
        1,
    ),
    ("cold adapter: among free slots, the least busy", [b(2, free=1), b(1, free=1)], True, 1),
    ("cold adapter: a tie in load goes to more free slots", [b(1, free=1), b(1, free=3)], True, 1),
    (
        "cold adapter: no free slot anywhere: where an idle one can be evicted",
        [b(0, free=0), b(5, free=0, evictable=True)],
        True,
        1,
    ),
    (
        "cold adapter: no room anywhere: the least busy (it answers 429)",
        [b(2, free=0), b(1, free=0)],
        True,
        1,
    ),
    (
        "cold adapter: never the dead one with room",
        [b(0, open=False), b(7, free=0, evictable=True)],
        True,
        1,
    ),
]


@pytest.mark.parametrize(("why", "backends", "adapter", "chosen"), CASES, ids=[c[0] for c in CASES])
def test_choose(why: str, backends: list[BackendView], adapter: bool, chosen: int | None) -> None:
    assert choose(backends, adapter, SPREAD) == chosen, why


def test_a_hot_adapter_spreads_only_as_far_as_the_bound() -> None:
    """Requests of one adapter arriving one after another (none finishing): the holder
    takes them up to the bound, then the other backend loads it, and from then on both
    are holders and share the load evenly. Not a coin toss: the same every run."""
    backends = [b(holds=True), b()]
    chosen = []
    for _ in range(3 * SPREAD):
        i = choose(backends, True, SPREAD)
        assert i is not None
        chosen.append(i)
        was = backends[i]
        backends[i] = BackendView(True, was.in_flight + 1, True, was.free_slots, was.evictable)
    assert chosen[:SPREAD] == [0] * SPREAD
    assert chosen[SPREAD] == 1
    assert [x.in_flight for x in backends] == [6, 6]


LEAST_LOADED = [
    # (why, backends, adapter?, chosen)
    ("no backend at all", [], True, None),
    ("every backend dead", [b(open=False), b(open=False)], True, None),
    ("one backend: the embedded default", [b(3)], True, 0),
    ("base: the least busy", [b(2), b(1)], False, 1),
    ("adapter: the least busy, though the other holds it", [b(0), b(2, holds=True)], True, 0),
    ("adapter: a tie goes to the first listed", [b(1), b(1, holds=True)], True, 0),
    ("adapter: a dead backend never, however idle", [b(0, open=False), b(9)], True, 1),
    ("adapter: a holder at the spread bound plays no part", [b(SPREAD, holds=True), b(1)], True, 1),
    ("adapter: the least busy even with no room (it answers 429)", [b(3), b(1, free=0)], True, 1),
]


@pytest.mark.parametrize(
    ("why", "backends", "adapter", "chosen"), LEAST_LOADED, ids=[c[0] for c in LEAST_LOADED]
)
def test_least_loaded(
    why: str, backends: list[BackendView], adapter: bool, chosen: int | None
) -> None:
    assert route("least-loaded", backends, adapter, SPREAD) == chosen, why


@pytest.mark.parametrize(("why", "backends", "adapter", "chosen"), CASES, ids=[c[0] for c in CASES])
def test_affinity_is_choose(
    why: str, backends: list[BackendView], adapter: bool, chosen: int | None
) -> None:
    policy: RoutingPolicy = "affinity"
    assert route(policy, backends, adapter, SPREAD) == chosen, why
