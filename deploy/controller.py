"""The rollout loop: judge the current step every interval, act by writing the registry.

All state is in the registry (step, when it started, every analysis), so a controller
killed at any moment is resumed by starting another: it waits out the rest of the
interval that was running and goes on. Only the holder of the rollout's lease acts
(every write checks it inside its transaction), so two controllers on one rollout never
both act; a live one renews its lease every poll, a dead one's expires after
``lease_ttl_s``. A person's ``deploy promote`` or ``abort`` ends the rollout under a
running controller, which then stops.

The canary version's quarantine is read from the registry at every poll (at least three
times per lease ttl), not only when a step is due: a quarantined canary is rolled back
at once, with the quarantine's reason (:func:`deploy.decision.quarantined`).

Times come from the registry: when a step is due is its ``step_started_at`` (or last
analysis) plus the interval, compared with :meth:`Registry.clock`, never this host's
clock, and the lease's expiry is set and checked by the registry inside its writes.

A registry that does not answer (:class:`registry.RegistryUnavailableError`, exit 37)
is waited out: the rollout is re-read (the lease claim) with capped exponential
back-off up to a deadline (:mod:`deploy.backoff`), and nothing is ever done on a view
read before the failure: a judgement interrupted by it (reading the quarantine,
recording the analysis, advancing, ending) is dropped, and the next one starts from the
re-read rollout. A write whose answer was lost but which took effect shows in that
re-read (an ended rollout stops the controller; a moved step is judged afresh).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

from deploy.backoff import Backoff, retrying
from deploy.decision import ArmFigures, Verdict, decide, quarantined
from deploy.plan import Plan
from deploy.source import ArmRef, MetricsSource, MetricsUnavailable
from registry import (
    LeaseHeldError,
    Quarantine,
    RefNotFoundError,
    Registry,
    RegistryError,
    RegistryUnavailableError,
    Rollout,
    RolloutConflictError,
)

T = TypeVar("T")


def new_holder() -> str:
    """A controller's lease id: host, process, and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _plain(figures: ArmFigures | None) -> dict[str, Any] | None:
    """An arm's figures as finite JSON (NaN and infinities become null)."""
    if figures is None:
        return None
    out: dict[str, Any] = {}
    for key, value in asdict(figures).items():
        out[key] = value if math.isfinite(value) else None
    return out


class Controller:
    def __init__(
        self,
        reg: Registry,
        source: MetricsSource,
        name: str,
        *,
        holder: str | None = None,
        lease_ttl_s: float = 15.0,
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        say: Callable[[str], None] = print,
    ) -> None:
        self.reg = reg
        self.source = source
        self.name = name
        self.holder = holder or new_holder()
        self.lease_ttl_s = lease_ttl_s
        self.backoff = backoff or Backoff()
        self.monotonic = monotonic  # this host's, only for its own waits
        self.sleep = sleep
        self.say = say

    def _retrying(self, call: Callable[[], T], what: str) -> T:
        """A registry read, retried with back-off while the registry is unavailable."""
        return retrying(call, self.backoff, what=what, sleep=self.sleep, say=self.say)

    def _claim(self, rollout_id: int) -> Rollout | None:
        """Renew the lease and read the rollout (retried while the registry is
        unavailable); None once it has ended."""
        try:
            return self._retrying(
                lambda: self.reg.claim_rollout(
                    self.name, rollout_id, self.holder, ttl_s=self.lease_ttl_s, who=self.holder
                ),
                f"claiming rollout #{rollout_id} of {self.name}",
            )
        except RolloutConflictError:
            return None
        except RegistryError as e:
            if e.code == "ref_not_found":
                return None
            raise

    def _first_claim(self, rollout_id: int) -> Rollout | None:
        """Wait for a dead controller's lease to expire (up to twice its ttl); a live
        controller keeps renewing, so this one then gives up with LeaseHeldError."""
        deadline = self.monotonic() + 2 * self.lease_ttl_s
        while True:
            try:
                return self._claim(rollout_id)
            except LeaseHeldError as e:
                if self.monotonic() > deadline:
                    raise
                self.say(f"waiting: {e}")
                self.sleep(min(1.0, self.lease_ttl_s / 3))

    def due(self, rollout: Rollout, plan: Plan) -> float:
        """When the current step is next judged: an interval after the step began or
        after its last analysis, whichever is later (read from the registry)."""
        last = epoch(rollout.step_started_at)
        for analysis in rollout.analyses:
            if analysis.step == rollout.step:
                last = max(last, epoch(analysis.at))
        return last + plan.interval_s

    def arms(self, rollout: Rollout) -> list[ArmRef]:
        return [
            ArmRef(self.name, rollout.stable, "stable"),
            ArmRef(self.name, rollout.canary, "canary"),
        ]

    def run(self, rollout_id: int) -> Rollout:
        """Drive the rollout until it ends; return its final record."""
        rollout = self._first_claim(rollout_id)
        try:
            if rollout is not None:
                # a source that keeps state (the scrape) takes its baseline now
                with contextlib.suppress(MetricsUnavailable):
                    self.source.figures(self.arms(rollout), 0.0)
            while rollout is not None:
                self.poll(rollout)
                rollout = self._claim(rollout_id)  # the next poll acts on a fresh read only
        finally:
            self._release(rollout_id)
        return self.final(rollout_id)

    def poll(self, rollout: Rollout) -> None:
        """One look at ``rollout``, as just read: judge it if its step is due (by the
        registry's clock) or its canary is quarantined, else sleep a while. A registry
        failure drops this view (the caller re-reads before anything else is done)."""
        plan = Plan.model_validate(rollout.plan)
        try:
            wait = self.due(rollout, plan) - self.reg.clock()
            if wait > 0 and self.quarantine(rollout) is None:
                self.sleep(min(wait, self.lease_ttl_s / 3))
            else:
                self.judge(rollout, plan)
        except (RolloutConflictError, RefNotFoundError) as e:
            # ended or moved under us (a person's promote/abort): re-read it
            self.say(f"{self.name}: {e}")
        except RegistryUnavailableError as e:
            self.say(f"{self.name}: registry unavailable ({e}); re-reading before acting")

    def _release(self, rollout_id: int) -> None:
        """Give the lease up; if the registry does not answer, it expires by itself."""
        try:
            self.reg.release_rollout(self.name, rollout_id, self.holder)
        except RegistryUnavailableError as e:
            self.say(f"{self.name}: lease not released ({e}); it expires in its ttl")

    def final(self, rollout_id: int) -> Rollout:
        found = self._retrying(lambda: self.reg.rollouts(self.name), f"reading {self.name}")
        for r in found:
            if r.id == rollout_id:
                return r
        raise RuntimeError(f"rollout #{rollout_id} of {self.name} vanished")

    def quarantine(self, rollout: Rollout) -> Quarantine | None:
        """The canary version's quarantine, read from the registry now."""
        return self.reg.adapter(f"{self.name}@{rollout.canary}").quarantine

    def judge(self, rollout: Rollout, plan: Plan) -> Verdict:
        """One analysis of the current step, recorded, then acted on. A quarantined canary
        is rolled back without reading figures (the source may be down; it does not
        matter)."""
        last_step = rollout.step == len(rollout.steps) - 1
        stable = canary = None
        quarantine = self.quarantine(rollout)
        verdict = quarantined(f"{self.name}@{rollout.canary}", quarantine)
        if verdict is None:
            try:
                stable, canary = self.source.figures(self.arms(rollout), plan.interval_s)
                verdict = decide(
                    plan.thresholds(), stable, canary, weight=rollout.weight, last_step=last_step
                )
            except MetricsUnavailable as e:
                stable = canary = None
                verdict = Verdict("hold", f"no figures: {e}")
        figures = {
            "stable": _plain(stable),
            "canary": _plain(canary),
            "source": self.source.describe(),
            "window_s": plan.interval_s,
        }
        if quarantine is not None:
            figures["quarantine"] = asdict(quarantine)
        kw: dict[str, Any] = {"holder": self.holder, "who": self.holder}
        self.reg.record_analysis(
            self.name,
            rollout.id,
            step=rollout.step,
            verdict=verdict.action,
            reason=verdict.reason,
            figures=figures,
            **kw,
        )
        at = f"{self.name} step {rollout.step} ({rollout.weight:g}%)"
        self.say(f"{at}: {verdict.action}: {verdict.reason}")
        if verdict.action == "advance":
            self.reg.advance_rollout(
                self.name, rollout.id, rollout.step + 1, reason=verdict.reason, **kw
            )
        elif verdict.action == "promote":
            self.reg.end_rollout(self.name, rollout.id, "promoted", reason=verdict.reason, **kw)
        elif verdict.action == "rollback":
            self.reg.end_rollout(self.name, rollout.id, "rolled_back", reason=verdict.reason, **kw)
        return verdict
