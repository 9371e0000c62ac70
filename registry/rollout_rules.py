"""The rules of a rollout as pure decisions: one active rollout per name, and who may
act on one (lease liveness).

:mod:`registry.rollouts` applies them inside each write transaction with the registry's
clock; callers (``deploy``) apply the same functions to what they read, so a rule and its
message live here once.
"""

from __future__ import annotations

from registry.errors import LeaseHeldError, RolloutConflictError
from registry.records import Rollout


def already_active(active: Rollout) -> RolloutConflictError:
    """The refusal of a second rollout of ``active.name`` while ``active`` runs."""
    name = active.name
    return RolloutConflictError(
        f"{name} already has an active rollout (#{active.id}, {name}@{active.stable} -> "
        f"{name}@{active.canary} at {active.weight:g}%); promote or abort it first "
        f"(`deploy promote {name}` / `deploy abort {name}`)"
    )


def to_resume(active: Rollout | None, canary: int) -> Rollout | None:
    """What a request to roll ``canary`` out finds: the active rollout to the same
    version (resume it), None (start one), or RolloutConflictError (another is active;
    at most one rollout per name)."""
    if active is None:
        return None
    if active.canary == canary:
        return active
    raise already_active(active)


def lease_live(rollout: Rollout, now: float) -> bool:
    """A controller holds the rollout's lease and it has not expired at ``now`` (the
    registry's clock: every caller compares the expiry the registry wrote with it)."""
    return rollout.holder is not None and (rollout.lease_until or 0.0) >= now


def claim_refused(rollout: Rollout, holder: str, now: float) -> LeaseHeldError | None:
    """Why ``holder`` may not take the lease now (None: it may): another holder's lease
    is live."""
    if rollout.holder in (None, holder) or not lease_live(rollout, now):
        return None
    left = f" (lease for {rollout.lease_until - now:.0f} s more)" if rollout.lease_until else ""
    return LeaseHeldError(
        f"rollout #{rollout.id} of {rollout.name} is driven by {rollout.holder}{left}"
    )


def write_refused(rollout: Rollout, holder: str | None, now: float) -> LeaseHeldError | None:
    """Why a write by ``holder`` is refused now (None: allowed). A controller (``holder``)
    may write only while it holds the lease; a person (None) only while no controller's
    lease is live."""
    live = lease_live(rollout, now)
    if holder is None and not live:
        return None
    if holder is not None and rollout.holder == holder:
        return None
    owner = rollout.holder if live else "nobody"
    return LeaseHeldError(
        f"rollout #{rollout.id} of {rollout.name} is driven by {owner}; "
        f"{'claim it first' if holder is not None and not live else 'only one controller acts'}"
    )
