"""Answers the gateway got from its registry, kept until the registry changes, and the
last known good answer for when the registry cannot be asked.

Each entry carries the *version* it was computed at: the registry's change token and the
gateway's own epoch (its holds and quarantines). An entry at the current version is used
as is; an older one is asked again, and if the registry does not answer, served anyway
(the last known good), since a version is immutable and an alias that moved while the
registry is down cannot be learnt of anyway. A name never answered while the registry is
down is refused at once (no per-request wait on a dead registry). :func:`decide` is that
rule, pure; :class:`VersionedCache` only stores.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from server.errors import RegistryUnavailableError

V = TypeVar("V")

#: (the registry's change token, the gateway's local epoch) an answer was computed at.
Version = tuple[int, int]


class Lookup(Enum):
    USE = "use"
    """The entry is current: serve it, ask nothing."""
    ASK = "ask"
    """Ask the registry (and fall back to the entry, if any, when it does not answer)."""
    USE_STALE = "use_stale"
    """The registry is down: serve the last known good entry without asking."""
    REFUSE = "refuse"
    """The registry is down and nothing is known: 503 registry_unavailable at once."""


def decide(entry: Version | None, current: Version | None, registry_up: bool) -> Lookup:
    """What to do with a cached entry (its version, or None) for one lookup."""
    if entry is not None and entry == current:
        return Lookup.USE
    if registry_up:
        return Lookup.ASK
    return Lookup.USE_STALE if entry is not None else Lookup.REFUSE


def after_failure(entry: Version | None, registry_unavailable: bool) -> Lookup:
    """An ask failed: serve the last known good entry only when the registry did not
    answer. An answer (a 404 for a removed name, say) is the truth and is raised."""
    return Lookup.USE_STALE if registry_unavailable and entry is not None else Lookup.REFUSE


@dataclass(frozen=True)
class Entry(Generic[V]):
    version: Version
    value: V


class VersionedCache(Generic[V]):
    """A bounded LRU of answers with the version each was computed at. Keys may be client
    input (a `model` string), so the bound holds whatever arrives."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, Entry[V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry[V] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)  # O(1); the bound evicts the coldest
        return entry

    def put(self, key: str, version: Version, value: V) -> None:
        # An older answer landing late is harmless: its version is not current, so the
        # next lookup asks again.
        self._entries[key] = Entry(version, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


async def answer(
    cache: VersionedCache[V],
    key: str,
    current: Version | None,
    registry_up: bool,
    ask: Callable[[], Awaitable[V]],
    stale: Callable[[V], V],
    what: str,
) -> V:
    """The answer for `key`: cached, asked (`ask` stores what it gets), or the last known
    good passed through `stale` (the gateway's own refusals still apply to it); else
    RegistryUnavailableError (503, Retry-After) naming `what` was asked for."""
    entry = cache.get(key)
    cached = entry.version if entry is not None else None
    choice = decide(cached, current, registry_up)
    if choice is Lookup.ASK:
        try:
            return await ask()
        except RegistryUnavailableError:
            choice = after_failure(cached, registry_unavailable=True)
    if entry is not None and choice is Lookup.USE:
        return entry.value
    if entry is not None and choice is Lookup.USE_STALE:
        return stale(entry.value)
    raise RegistryUnavailableError(
        f"the registry does not answer and this gateway has no {what} cached; retry shortly"
    )
