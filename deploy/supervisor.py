"""``deploy run``: a long-lived controller that drives every active rollout recorded in
the registry, the in-cluster form of ``deploy canary``.

A person records a rollout from a laptop (``deploy canary NAME --to N --detach``); the
supervisor finds it and runs one :class:`deploy.controller.Controller` for it, in its own
thread with its own registry connection and its own metrics source. It looks again
whenever the registry's change token moves (a long poll) and at least every ``scan_s``.

Crash safety is the controller's: all state is in the registry and each rollout has its
own lease, so a supervisor killed at any moment is replaced by another (a new pod) that
takes each rollout over once its lease has expired; a rollout whose lease another live
holder renews is left to it (:func:`to_drive`), so two supervisors side by side never
both act on one rollout. A driver that stops on an error (the registry gone past the
back-off deadline, a lease taken by another) is dropped and the rollout is picked up
again on a later scan if it is still active and free. SIGTERM stops every driver between
two registry operations and releases its lease, so a replacement does not wait for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from deploy.backoff import Backoff, retrying
from deploy.controller import Controller, new_holder
from deploy.metrics import RolloutMetrics
from deploy.source import MetricsSource
from registry import Registry, RegistryError, RegistryUnavailableError, Rollout
from registry.rollout_rules import lease_live

T = TypeVar("T")


class Stopped(Exception):
    """The supervisor was told to stop; raised inside a driver's wait."""


def to_drive(
    active: Iterable[Rollout], driving: Collection[int], holder: str, now: float
) -> list[Rollout]:
    """The rollouts to start a driver for: active ones not driven here already, whose
    lease is free, expired (``now`` is the registry's clock) or this supervisor's own."""
    return [
        r
        for r in active
        if r.active
        and r.id not in driving
        and (r.holder in (None, holder) or not lease_live(r, now))
    ]


def active_rollouts(reg: Registry) -> list[Rollout]:
    """Every active rollout in the registry, one per adapter name that has one."""
    names = sorted({a.name for a in reg.list_adapters()})
    found = (reg.rollout(name) for name in names)
    return [r for r in found if r is not None and r.active]


@dataclass
class Supervisor:
    """Finds active rollouts and drives each in a thread until it ends or this stops.

    ``open_registry`` opens a connection (one for the scans, one per driver: a registry
    object is not shared between threads); ``source`` makes a metrics source per driver
    (a scraping source keeps per-rollout state).
    """

    open_registry: Callable[[], Registry]
    source: Callable[[], MetricsSource]
    lease_ttl_s: float = 15.0
    scan_s: float = 5.0
    min_gap_s: float = 1.0
    backoff: Backoff = field(default_factory=Backoff)
    say: Callable[[str], None] = print
    holder: str = field(default_factory=new_holder)
    stop: threading.Event = field(default_factory=threading.Event)
    drivers: dict[int, threading.Thread] = field(default_factory=dict)
    metrics: RolloutMetrics = field(default_factory=RolloutMetrics)

    def _sleep(self, seconds: float) -> None:
        """A driver's wait: returns after ``seconds`` or raises :class:`Stopped`."""
        if self.stop.wait(seconds):
            raise Stopped

    def _retrying(self, call: Callable[[], T], what: str) -> T:
        """A registry read, retried with back-off while the registry is unavailable."""
        return retrying(call, self.backoff, what=what, sleep=self._sleep, say=self.say)

    def _drive(self, rollout: Rollout) -> None:
        name = rollout.name
        try:
            with self.open_registry() as reg:
                controller = Controller(
                    reg, self.source(), name, holder=self.holder, lease_ttl_s=self.lease_ttl_s,
                    backoff=self.backoff, sleep=self._sleep, say=self.say,
                )  # fmt: skip
                final = controller.run(rollout.id)
            self.metrics.count_end(final)
            self.say(f"{name}: rollout #{final.id} {final.state}: {final.reason}")
        except Stopped:
            self.say(f"{name}: stopped; lease of rollout #{rollout.id} released")
        except Exception as e:  # one rollout's failure never stops the others
            what = str(e) if isinstance(e, RegistryError) else repr(e)
            self.say(f"{name}: driver of rollout #{rollout.id} stopped: {what}; it is picked "
                     "up again on a later scan while it is active")  # fmt: skip

    def scan(self, reg: Registry) -> list[Rollout]:
        """One look at the registry: start a driver for each rollout :func:`to_drive`
        names; returns those started."""
        for rid in [rid for rid, t in self.drivers.items() if not t.is_alive()]:
            del self.drivers[rid]
        active = self._retrying(lambda: active_rollouts(reg), "listing active rollouts")
        now = self._retrying(reg.clock, "reading the registry's clock")
        started = to_drive(active, self.drivers.keys(), self.holder, now)
        self.metrics.observe(active, now, drivers=len(self.drivers) + len(started))
        for rollout in started:
            n = rollout.name
            self.say(f"{n}: driving rollout #{rollout.id} ({n}@{rollout.stable} -> "
                     f"{n}@{rollout.canary}, step {rollout.step})")  # fmt: skip
            thread = threading.Thread(target=self._drive, args=(rollout,), daemon=True,
                                      name=f"rollout-{rollout.id}")  # fmt: skip
            self.drivers[rollout.id] = thread
            thread.start()
        return started

    def _wait(self, reg: Registry, token: int) -> int:
        """Until the registry changes (a write: a new rollout, an ended one) or
        ``scan_s`` passes; at least ``min_gap_s`` (each driver's lease renewal is a
        write too). Returns the token seen last."""
        self._sleep(self.min_gap_s)
        deadline = time.monotonic() + self.scan_s
        while time.monotonic() < deadline:
            try:
                seen = reg.wait_for_change(token, timeout_s=min(1.0, self.scan_s))
            except RegistryUnavailableError as e:
                self.say(f"deploy run: registry unavailable ({e}); waiting")
                self._sleep(1.0)
                continue
            self._sleep(0)
            if seen != token:
                return seen
        return token

    def run(self) -> None:
        """Scan, then wait for a registry change (or ``scan_s``), until :attr:`stop` is
        set; then wait for every driver to release its lease."""
        self.say(f"deploy run: supervising every active rollout as {self.holder}")
        try:
            with self.open_registry() as reg:
                token = self._retrying(reg.change_token, "reading the registry")
                while True:
                    self.scan(reg)
                    token = self._wait(reg, token)
        except Stopped:
            pass
        finally:
            self.stop.set()
            for thread in list(self.drivers.values()):
                thread.join()
