"""Canary arm choice: a pure function of a stable request key.

While a rollout of `NAME` is active, `NAME` and `NAME@production` are split between the
stable version and the canary by the rollout's weight (percent). The arm is chosen from
the request's key, so one user sees one arm across requests, gateway restarts and
replicas: the OpenAI `user` field, else the `x-session-id` header, else nothing (then each
request draws afresh). The key is hashed with a salt naming the rollout, so a user's
place in [0, 100) is fixed for the whole rollout: raising the weight only moves users
from stable to canary, never back, and a new rollout of the name reshuffles who goes
first. Nothing here does I/O; `server.resolver` holds the split, `server.serving` asks.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Arm = Literal["stable", "canary"]
STABLE: Arm = "stable"
CANARY: Arm = "canary"
SESSION_HEADER = "x-session-id"
_SPAN = float(2**64)


def sticky_key(user: str | None, session: str | None) -> str | None:
    """The request's stable key: `user`, else the session header, else None. Empty
    strings count as absent (a client that sends `"user": ""` names nobody)."""
    if user:
        return "u:" + user
    if session:
        return "s:" + session
    return None


def position(key: str, salt: str) -> float:
    """Where `key` falls in [0, 100) for the rollout named by `salt` (uniform, fixed)."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / _SPAN * 100.0


@dataclass(frozen=True)
class Split:
    """A name's active split: the canary's weight in percent and the rollout's salt."""

    weight: float
    salt: str

    def arm(self, key: str | None, draw: Callable[[], float] = random.random) -> Arm:
        """The arm for `key`; with no key, `draw()` (uniform [0, 1)) decides this request."""
        if self.weight <= 0:
            return STABLE
        if self.weight >= 100:
            return CANARY
        at = position(key, self.salt) if key is not None else draw() * 100.0
        return CANARY if at < self.weight else STABLE
