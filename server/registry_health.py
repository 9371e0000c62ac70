"""Whether the gateway's registry answers, and for how long it has not: one object owns
that state, and the gateway's decisions about it are pure functions of it.

A gateway keeps serving what it knows while its registry is down (cached routes, adapters
already pulled) and stays ready: one registry blip must not take every gateway out of a
load balancer. This module says how stale that knowledge is (``/ready``'s ``registry``
object, ``loraport_registry_stale_seconds``) and how soon to ask again. Times are
``time.monotonic()`` seconds, passed in, so every transition is tested without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Back-off between tries while the registry does not answer: short, since a refused
#: connection costs nothing and recovery should be seen within about a second.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 1.0


@dataclass
class RegistryHealth:
    """The registry as this gateway last saw it. Starts down: nothing has answered yet."""

    up: bool = False
    last_answer: float | None = None
    """When the registry last answered (any answer, errors included: it is reachable)."""
    down_since: float | None = None
    last_error: str | None = None
    """A short, URL-free reason (an error code such as `registry_unavailable`, `timeout`):
    `/ready` answers anyone; the gateway log has the full message."""
    failures: int = 0
    """Failed tries in a row."""

    def answered(self, now: float) -> None:
        self.up = True
        self.last_answer = now
        self.down_since = None
        self.failures = 0

    def failed(self, now: float, reason: str) -> None:
        if self.up or self.down_since is None:
            self.down_since = now
        self.up = False
        self.last_error = reason
        self.failures += 1

    def stale_s(self, now: float) -> float:
        """0 while up; else how long the gateway's view has not been refreshed (since the
        last answer, or since it first failed when nothing ever answered)."""
        if self.up:
            return 0.0
        since = self.last_answer if self.last_answer is not None else self.down_since
        return max(0.0, now - since) if since is not None else 0.0

    def retry_in_s(self) -> float:
        """How long to wait before the next try: doubling from RETRY_FIRST_S to RETRY_MAX_S."""
        if self.failures <= 0:
            return 0.0
        return float(min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** (self.failures - 1)))

    def detail(self, now: float) -> dict[str, Any]:
        """`/ready`'s `registry` object."""
        return {
            "state": "up" if self.up else "down",
            "stale_s": round(self.stale_s(now), 3),
            "last_error": self.last_error,
        }
