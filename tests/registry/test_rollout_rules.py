"""The rules of a rollout as pure decisions (registry.rollout_rules): lease liveness, who
may claim or write, and one active rollout per name."""

from __future__ import annotations

import pytest

import registry
from registry import rollout_rules as rules


def _record(holder: str | None, lease_until: float | None, canary: int = 2) -> registry.Rollout:
    return registry.Rollout(
        id=7, name="support", stable=1, canary=canary, steps=(10.0, 100.0), plan={}, step=0,
        weight=10.0, state="active", reason=None, started_by="ann", started_at="t",
        step_started_at="t", ended_at=None, holder=holder, lease_until=lease_until,
    )  # fmt: skip


NOW = 1000.0


@pytest.mark.parametrize(
    ("holder", "until", "live"),
    [(None, None, False), ("a", None, False), ("a", NOW - 1, False), ("a", NOW, True),
     ("a", NOW + 5, True)],
)  # fmt: skip
def test_lease_live(holder: str | None, until: float | None, live: bool) -> None:
    assert rules.lease_live(_record(holder, until), NOW) is live


@pytest.mark.parametrize(
    ("holder", "until", "claimer", "refused"),
    [
        (None, None, "b", False),  # free
        ("b", NOW + 5, "b", False),  # a renewal
        ("a", NOW - 1, "b", False),  # expired: taken over
        ("a", NOW + 5, "b", True),  # live: refused
    ],
)
def test_claim_refused(
    holder: str | None, until: float | None, claimer: str, refused: bool
) -> None:
    found = rules.claim_refused(_record(holder, until), claimer, NOW)
    assert (found is not None) is refused
    if found is not None:
        assert isinstance(found, registry.LeaseHeldError) and "driven by a" in str(found)
        assert "5 s more" in str(found)


@pytest.mark.parametrize(
    ("holder", "until", "writer", "refusal"),
    [
        (None, None, None, None),  # a person, no controller
        ("a", NOW - 1, None, None),  # a person over a dead controller
        ("a", NOW + 5, None, "driven by a; only one controller acts"),  # a person, live one
        ("a", NOW + 5, "a", None),  # the holder
        ("a", NOW - 1, "a", None),  # the holder, expired but not taken over
        ("a", NOW + 5, "b", "driven by a; only one controller acts"),
        ("a", NOW - 1, "b", "driven by nobody; claim it first"),
        (None, None, "b", "driven by nobody; claim it first"),
    ],
)
def test_write_refused(
    holder: str | None, until: float | None, writer: str | None, refusal: str | None
) -> None:
    found = rules.write_refused(_record(holder, until), writer, NOW)
    assert (None if found is None else str(found).split(" is ", 1)[1]) == refusal


def test_to_resume() -> None:
    active = _record(None, None, canary=2)
    assert rules.to_resume(None, 2) is None  # none active: start one
    assert rules.to_resume(active, 2) is active  # the same canary: resume it
    with pytest.raises(registry.RolloutConflictError, match=r"#7, support@1 -> support@2"):
        rules.to_resume(active, 3)  # another: one active rollout per name
