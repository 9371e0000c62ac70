"""Waiting out a registry that does not answer: exponential back-off, capped, with a
total deadline.

:func:`delays` is the schedule, a pure function (``first``, ``first * factor``, ...,
each at most ``cap_s``, stopping before their sum passes ``deadline_s``).
:func:`retrying` calls a registry operation and, while it raises
:class:`registry.RegistryUnavailableError` (the transient one, exit 37), waits the next
delay, says so, and calls it again; when the schedule is spent the error goes up. Only
reads (and the lease claim, which re-reads the rollout) are retried this way: a write
that failed is never repeated on the view it was decided from (see
:mod:`deploy.controller`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from registry import RegistryUnavailableError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to keep asking a registry that does not answer (defaults: deploy's)."""

    first_s: float = 0.5
    factor: float = 2.0
    cap_s: float = 15.0
    deadline_s: float = 300.0


def delays(policy: Backoff) -> list[float]:
    """The waits between attempts: growing by ``factor`` from ``first_s``, none above
    ``cap_s``, and all of them together at most ``deadline_s``."""
    if policy.first_s <= 0 or policy.factor < 1 or policy.cap_s <= 0 or policy.deadline_s < 0:
        raise ValueError(f"not a back-off: {policy}")
    out: list[float] = []
    total, wait = 0.0, policy.first_s
    while True:
        step = min(wait, policy.cap_s)
        if total + step > policy.deadline_s:
            return out
        out.append(step)
        total += step
        wait *= policy.factor


def retrying(
    call: Callable[[], T],
    policy: Backoff,
    *,
    what: str,
    sleep: Callable[[float], None],
    say: Callable[[str], None],
) -> T:
    """``call()``, retried after each delay of ``policy`` while the registry is
    unavailable; the last RegistryUnavailableError goes up once the schedule is spent."""
    schedule = delays(policy)
    for attempt, wait in enumerate([*schedule, None], start=1):
        try:
            return call()
        except RegistryUnavailableError as exc:
            if wait is None:
                say(f"registry still unavailable after {attempt} tries ({what}); giving up")
                raise
            say(f"registry unavailable ({what}: {exc}); try {attempt + 1} in {wait:g} s")
            sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises
