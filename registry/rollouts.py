"""Canary rollouts: the routing state gateways split by, and the controller's record.

A rollout of adapter ``NAME`` moves traffic from its ``production`` version (the stable
arm) to a ``canary`` version, a few percent at a time (``steps``, increasing canary
weights in percent). While it is active, plain ``NAME`` and ``NAME@production`` are split
between the two arms by weight; pinned refs (``NAME@N``) never are. It ends promoted (the
``production`` alias moves to the canary, in the same transaction), rolled back (by the
controller, with its reason) or aborted (by a person); either way the canary's weight
drops to 0. Every write is one transaction that also appends to the event log, so the
gateways' change token moves and each replica re-reads the split within its refresh.

At most one rollout per name is active (a partial unique index, and a check inside the
``BEGIN IMMEDIATE`` transaction). Two controllers cannot both act: a controller writes
with its ``holder`` id, and every write checks, inside its transaction, that this holder
owns the rollout's lease (:func:`claim` takes it when free or expired). A person's
promote or abort (``holder=None``) always wins; the controller then sees the rollout end.

While a rollout is active, ``production`` moves only through it: a hand move (``registry
alias set/rm NAME production``, ``registry push --alias production``) would leave the
rollout splitting from a stable arm that no longer serves, so it is refused
(:func:`refuse_hand_move`); :func:`end` moves it on promotion. A quarantined version
neither starts a rollout as its canary nor is promoted
(:func:`registry.quarantine.refuse_quarantined`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Literal

from registry.bases import check_same_base
from registry.deps import Deps
from registry.errors import (
    InvalidRolloutError,
    RefNotFoundError,
    RolloutConflictError,
)
from registry.quarantine import refuse_quarantined
from registry.records import Rollout
from registry.refs import PRODUCTION, check_name, check_version
from registry.rollout_rules import already_active, claim_refused, write_refused
from registry.sql_store import SqlStore, Tx, now_iso
from registry.targets import live_version

Outcome = Literal["promoted", "rolled_back", "aborted"]
MAX_STEPS = 100


def check_steps(steps: Sequence[float]) -> tuple[float, ...]:
    """Canary weights in percent: 1 to MAX_STEPS of them, finite, in (0, 100], increasing."""
    out: list[float] = []
    if not steps or len(steps) > MAX_STEPS:
        raise InvalidRolloutError(f"a rollout needs 1 to {MAX_STEPS} steps, not {len(steps)}")
    for w in steps:
        if isinstance(w, bool) or not isinstance(w, int | float):
            raise InvalidRolloutError(f"step {w!r} is not a number (canary weight in percent)")
        if not math.isfinite(w) or w <= 0 or w > 100:
            raise InvalidRolloutError(
                f"step {w!r} is outside 0-100: each step is the canary's weight in percent, "
                "above 0 and at most 100"
            )
        if out and w <= out[-1]:
            raise InvalidRolloutError(
                f"steps must increase: {w:g} follows {out[-1]:g} (e.g. 10,25,50,100)"
            )
        out.append(float(w))
    return tuple(out)


def _check_plan(plan: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(plan, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRolloutError(f"the rollout plan is not plain finite JSON: {exc}") from None
    return plan


def start(
    deps: Deps,
    name: str,
    canary: int,
    *,
    steps: Sequence[float],
    plan: dict[str, Any] | None = None,
    who: str | None = None,
) -> Rollout:
    """Begin a rollout of ``name`` from its production version to ``canary``."""
    check_name(name)
    check_version(canary)
    weights = check_steps(steps)
    plan = _check_plan(dict(plan or {}))
    store = deps.store
    store.check_writable()
    if store.kind_of(name) != "adapter":
        raise RefNotFoundError(f"no adapter named {name!r}; see `registry ls`")
    by, at = deps.who(who), now_iso()
    with store.write() as tx:
        active = store.active_rollout(name)
        if active is not None:
            raise already_active(active)
        stable = store.alias_target(name, PRODUCTION)
        if stable is None:
            raise InvalidRolloutError(
                f"{name} has no production alias, so there is no stable version to split "
                f"from; set one first (`registry alias set {name} production N`)"
            )
        new = live_version(store, name, canary)
        if canary == stable:
            raise InvalidRolloutError(f"{name}@{canary} is already production; nothing to roll out")
        old = store.adapter(name, stable)
        assert old is not None
        refuse_quarantined(new, as_="a canary")
        check_same_base(old, new, as_="canary")
        rollout_id = tx.insert_rollout(
            name=name, stable=stable, canary=canary, steps=weights, plan=plan, who=by, at=at
        )
    return _get(deps, rollout_id)


def refuse_hand_move(store: SqlStore, name: str) -> None:
    """Refuse a move of ``name@production`` other than the rollout's own while one is
    active (call inside the write transaction that would move it)."""
    found = store.active_rollout(name)
    if found is None:
        return
    raise RolloutConflictError(
        f"{name} has an active rollout (#{found.id}, {name}@{found.stable} -> "
        f"{name}@{found.canary} at {found.weight:g}%): production moves only through it. End "
        f"it first: `deploy promote {name}` (production -> {found.canary}) or `deploy abort "
        f"{name}` (production stays {found.stable})"
    )


def active(deps: Deps, name: str) -> Rollout | None:
    """The active rollout of ``name``, with its analyses, or None."""
    found = deps.store.active_rollout(name)
    return None if found is None else deps.store.rollout(found.id)


def history(deps: Deps, name: str) -> list[Rollout]:
    """Every rollout of ``name``, oldest first."""
    return deps.store.rollouts(name)


def _get(deps: Deps, rollout_id: int) -> Rollout:
    found = deps.store.rollout(rollout_id)
    assert found is not None, rollout_id
    return found


def _current(deps: Deps, name: str, rollout_id: int | None) -> Rollout:
    """The active rollout (inside a write transaction), checked to be ``rollout_id``."""
    found = deps.store.active_rollout(name)
    if found is None:
        ended = deps.store.rollout(rollout_id) if rollout_id is not None else None
        if ended is not None and ended.name == name:
            raise RolloutConflictError(
                f"rollout #{ended.id} of {name} has ended ({ended.state}: {ended.reason})"
            )
        raise RefNotFoundError(f"{name} has no active rollout; see `deploy history {name}`")
    if rollout_id is not None and found.id != rollout_id:
        raise RolloutConflictError(
            f"rollout #{rollout_id} of {name} has ended; #{found.id} is the active one"
        )
    return found


def _check_lease(deps: Deps, rollout: Rollout, holder: str | None) -> None:
    """Apply :func:`write_refused` with the registry's clock (inside the write)."""
    refused = write_refused(rollout, holder, deps.store.clock())
    if refused is not None:
        raise refused


def claim(
    deps: Deps, name: str, rollout_id: int, holder: str, *, ttl_s: float, who: str | None = None
) -> Rollout:
    """Take (or renew) the lease on a rollout for ``ttl_s`` seconds; LeaseHeldError if
    another holder's lease is still live."""
    if not holder or not math.isfinite(ttl_s) or ttl_s <= 0:
        raise InvalidRolloutError("a lease needs a holder id and a positive finite ttl")
    with deps.store.write() as tx:
        found = _current(deps, name, rollout_id)
        now = deps.store.clock()  # the database's: the expiry it stores is on it too
        refused = claim_refused(found, holder, now)
        if refused is not None:
            raise refused
        if tx.set_lease(rollout=found, holder=holder, until=now + ttl_s):
            _lease_event(tx, found, holder, deps.who(who))
    return _get(deps, rollout_id)


def _lease_event(tx: Tx, rollout: Rollout, holder: str, who: str) -> None:
    tx.event(
        at=now_iso(),
        who=who,
        action="rollout.lease",
        name=rollout.name,
        version=rollout.canary,
        detail={"rollout": rollout.id, "holder": holder, "from": rollout.holder},
    )


def release(deps: Deps, name: str, rollout_id: int, holder: str) -> None:
    """Give the lease up (a no-op unless ``holder`` has it), so another may resume now."""
    with deps.store.write() as tx:
        found = deps.store.active_rollout(name)
        if found is not None and found.id == rollout_id and found.holder == holder:
            tx.set_lease(rollout=found, holder=None, until=None)


def advance(
    deps: Deps,
    name: str,
    rollout_id: int,
    step: int,
    *,
    holder: str | None = None,
    reason: str = "",
    who: str | None = None,
) -> Rollout:
    """Move an active rollout to ``step`` (compare-and-set: it must be the next one)."""
    with deps.store.write() as tx:
        found = _current(deps, name, rollout_id)
        _check_lease(deps, found, holder)
        if step != found.step + 1 or step >= len(found.steps):
            raise RolloutConflictError(
                f"rollout #{found.id} of {name} is at step {found.step} of {len(found.steps)}; "
                f"step {step} is not the next one (another writer moved it?)"
            )
        tx.move_rollout(
            rollout=found,
            step=step,
            weight=found.steps[step],
            reason=reason,
            who=deps.who(who),
            at=now_iso(),
        )
    return _get(deps, rollout_id)


def record_analysis(
    deps: Deps,
    name: str,
    rollout_id: int,
    *,
    verdict: str,
    reason: str,
    figures: dict[str, Any],
    step: int,
    holder: str | None = None,
    who: str | None = None,
) -> None:
    """Record one judgement of the rollout's step ``step`` (refused if it has moved)."""
    figures = _check_plan(figures)
    with deps.store.write() as tx:
        found = _current(deps, name, rollout_id)
        _check_lease(deps, found, holder)
        if found.step != step:
            raise RolloutConflictError(
                f"rollout #{found.id} of {name} moved to step {found.step}; this analysis was "
                f"of step {step}"
            )
        tx.insert_analysis(
            rollout=found,
            verdict=verdict,
            reason=reason,
            figures=figures,
            who=deps.who(who),
            at=now_iso(),
        )


def end(
    deps: Deps,
    name: str,
    rollout_id: int | None,
    outcome: Outcome,
    *,
    reason: str,
    holder: str | None = None,
    who: str | None = None,
) -> Rollout:
    """End the active rollout: ``promoted`` moves ``production`` to the canary; ``rolled_back``
    and ``aborted`` leave it. A person (``holder=None``) may promote or abort over a
    controller's lease; a controller needs the lease."""
    if outcome not in ("promoted", "rolled_back", "aborted"):
        raise InvalidRolloutError(f"a rollout ends promoted, rolled_back or aborted, not {outcome}")
    with deps.store.write() as tx:
        found = _current(deps, name, rollout_id)
        if holder is not None:
            _check_lease(deps, found, holder)
        by, at = deps.who(who), now_iso()
        if outcome == "promoted":
            canary = deps.store.adapter(name, found.canary)
            assert canary is not None, (name, found.canary)
            refuse_quarantined(canary, as_="production")
            tx.move_alias(name=name, alias=PRODUCTION, version=found.canary, who=by, at=at)
        tx.end_rollout(rollout=found, state=outcome, reason=reason, who=by, at=at)
    return _get(deps, found.id)
