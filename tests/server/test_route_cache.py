"""The route cache's decisions, table-driven: when a cached answer is used, asked again,
served stale (the registry down), or refused."""

from __future__ import annotations

import pytest

from server.route_cache import Lookup, VersionedCache, after_failure, decide

NOW = (7, 0)


@pytest.mark.parametrize(
    ("entry", "current", "up", "expected"),
    [
        # current entry: used, whatever the registry's state (nothing asked per request)
        ((7, 0), NOW, True, Lookup.USE),
        ((7, 0), NOW, False, Lookup.USE),
        # the registry's token moved: ask again; down, serve the last known good
        ((6, 0), NOW, True, Lookup.ASK),
        ((6, 0), NOW, False, Lookup.USE_STALE),
        # this gateway's own epoch moved (a hold, a quarantine): the same
        ((7, 1), (7, 2), True, Lookup.ASK),
        ((7, 1), (7, 2), False, Lookup.USE_STALE),
        # a token that went back (a registry restored from a backup) is a change too
        ((9, 0), NOW, True, Lookup.ASK),
        # never resolved: ask; the registry down, refuse at once (no wait per request)
        (None, NOW, True, Lookup.ASK),
        (None, NOW, False, Lookup.REFUSE),
        # the gateway has never opened its registry: nothing is current
        (None, None, False, Lookup.REFUSE),
    ],
)
def test_decide(
    entry: tuple[int, int] | None, current: tuple[int, int] | None, up: bool, expected: Lookup
) -> None:
    assert decide(entry, current, up) is expected


@pytest.mark.parametrize(
    ("entry", "unavailable", "expected"),
    [
        ((6, 0), True, Lookup.USE_STALE),  # the registry did not answer: last known good
        (None, True, Lookup.REFUSE),  # nothing known: 503 registry_unavailable
        ((6, 0), False, Lookup.REFUSE),  # it answered (a 404 for a removed name): the truth
        (None, False, Lookup.REFUSE),
    ],
)
def test_after_failure(entry: tuple[int, int] | None, unavailable: bool, expected: Lookup) -> None:
    assert after_failure(entry, unavailable) is expected


def test_cache_is_bounded_lru_and_keeps_versions() -> None:
    cache: VersionedCache[str] = VersionedCache(2)
    cache.put("a", (1, 0), "A1")
    cache.put("b", (1, 0), "B1")
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", (1, 0), "C1")
    assert cache.get("b") is None and len(cache) == 2
    cache.put("a", (2, 0), "A2")
    entry = cache.get("a")
    assert entry is not None and (entry.version, entry.value) == ((2, 0), "A2")
    cache.put("a", (1, 0), "A1-late")  # a late, older answer: stored, and asked again on use
    entry = cache.get("a")
    assert entry is not None and decide(entry.version, (2, 0), True) is Lookup.ASK
    cache.clear()
    assert len(cache) == 0
