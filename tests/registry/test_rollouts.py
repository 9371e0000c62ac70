"""Rollouts in the registry: the split gateways read, one active rollout per name, a lease
so two controllers cannot both act, promotion that moves production, and the event log."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import registry
from registry.local import LocalRegistry
from registry.protocol import Registry
from tests.registry.conftest import reopen
from tests.support.synthetic import write_base


@pytest.fixture
def two(reg: Registry, make_adapter: Callable[..., Path]) -> Registry:
    """``support`` with versions 1 (production) and 2."""
    reg.push_adapter(make_adapter("support"), dataset="support-data")
    reg.push_adapter(make_adapter("support", seed=1), dataset="support-data")
    return reg


def test_start_records_the_split_and_logs_it(two: Registry) -> None:
    token = two.change_token()
    r = two.start_rollout("support", 2, steps=[10, 50, 100], plan={"interval_s": 5}, who="ann")
    assert (r.stable, r.canary, r.weight, r.step, r.state) == (1, 2, 10.0, 0, "active")
    assert r.steps == (10.0, 50.0, 100.0) and r.plan == {"interval_s": 5}
    assert two.rollout("support") == r
    assert two.change_token() > token  # gateways see it at their next refresh
    event = two.events("support")[-1]
    assert (event.action, event.who, event.version) == ("rollout.start", "ann", 2)
    assert event.detail["stable"] == 1 and event.detail["weight"] == 10
    assert two.resolve("support").version == 1  # production itself does not move


def test_one_active_rollout_per_name(two: Registry, make_adapter: Callable[..., Path]) -> None:
    two.push_adapter(make_adapter("support", seed=2), dataset="support-data")
    two.start_rollout("support", 2, steps=[10])
    with pytest.raises(registry.RolloutConflictError, match="already has an active rollout"):
        two.start_rollout("support", 3, steps=[10])
    two.end_rollout("support", None, "aborted", reason="changed my mind")
    assert two.start_rollout("support", 3, steps=[10]).canary == 3


def test_the_unique_index_holds_without_the_check(
    two: Registry, backing_reg: LocalRegistry
) -> None:
    two.start_rollout("support", 2, steps=[10])
    with pytest.raises(Exception, match=r"(?i)unique"):
        backing_reg.store.conn.execute(
            "INSERT INTO rollouts (name, stable, canary, steps, plan, weight, state, started_by,"
            " started_at, step_started_at) VALUES ('support', 1, 2, '[5]', '{}', 5, 'active',"
            " 'x', 'now', 'now')"
        )


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ([], "1 to 100 steps"),
        ([0, 50], "outside 0-100"),
        ([-5], "outside 0-100"),
        ([10, 101], "outside 0-100"),
        ([math.nan], "outside 0-100"),
        ([math.inf], "outside 0-100"),
        ([50, 25], "must increase"),
        ([10, 10], "must increase"),
        (["10"], "not a number"),
        ([True], "not a number"),
    ],
)
def test_bad_steps_are_refused_before_anything_is_written(
    two: Registry, steps: list[object], match: str
) -> None:
    token = two.change_token()
    with pytest.raises(registry.InvalidRolloutError, match=match):
        two.start_rollout("support", 2, steps=steps)  # type: ignore[arg-type]
    assert two.rollout("support") is None and two.change_token() == token


def test_bad_targets(two: Registry, tmp_path: Path, make_adapter: Callable[..., Path]) -> None:
    with pytest.raises(registry.RefNotFoundError, match="has no version 9"):
        two.start_rollout("support", 9, steps=[10])
    with pytest.raises(registry.RefNotFoundError, match="no adapter named"):
        two.start_rollout("nosuch", 1, steps=[10])
    with pytest.raises(registry.InvalidRolloutError, match="already production"):
        two.start_rollout("support", 1, steps=[10])
    two.add_base(write_base(tmp_path / "other", random=True), name="other-base")
    two.push_adapter(make_adapter("support", seed=5), base="other-base", dataset="support-data")
    with pytest.raises(registry.BaseMismatchError, match="other-base"):
        two.start_rollout("support", 3, steps=[10])
    with pytest.raises(registry.InvalidRolloutError, match="finite JSON"):
        two.start_rollout("support", 2, steps=[10], plan={"x": math.nan})
    assert two.rollouts("support") == []


def test_no_production_alias_is_refused(two: Registry) -> None:
    two.remove_alias("support", "production")
    with pytest.raises(registry.InvalidRolloutError, match="no production alias"):
        two.start_rollout("support", 2, steps=[10])


def test_walk_promote_and_history(two: Registry) -> None:
    r = two.start_rollout("support", 2, steps=[10, 50, 100])
    two.claim_rollout("support", r.id, "ctl-a", ttl_s=30)
    figures = {"canary": {"requests": 40.0}}
    two.record_analysis(
        "support", r.id, step=0, verdict="advance", reason="ok", figures=figures, holder="ctl-a"
    )
    assert two.advance_rollout("support", r.id, 1, holder="ctl-a").weight == 50
    with pytest.raises(registry.RolloutConflictError, match="not the next one"):
        two.advance_rollout("support", r.id, 1, holder="ctl-a")  # compare-and-set
    with pytest.raises(registry.RolloutConflictError, match="moved to step 1"):
        two.record_analysis(
            "support", r.id, step=0, verdict="hold", reason="late", figures={}, holder="ctl-a"
        )
    two.advance_rollout("support", r.id, 2, holder="ctl-a")
    done = two.end_rollout("support", r.id, "promoted", reason="all steps passed", holder="ctl-a")
    assert (done.state, done.weight, done.holder) == ("promoted", 0.0, None)
    assert two.resolve("support").version == 2 and two.rollout("support") is None
    [past] = two.rollouts("support")
    assert [a.verdict for a in past.analyses] == ["advance"]
    assert past.analyses[0].figures == figures and past.analyses[0].weight == 10
    actions = [e.action for e in two.events("support")]
    assert actions[-6:] == [
        "rollout.lease",
        "rollout.analysis",
        "rollout.step",
        "rollout.step",
        "alias.set",
        "rollout.promoted",
    ]
    with pytest.raises(registry.RolloutConflictError, match="has ended"):
        two.advance_rollout("support", r.id, 1, holder="ctl-a")


def test_rollback_keeps_production_and_records_why(two: Registry) -> None:
    r = two.start_rollout("support", 2, steps=[10, 100])
    done = two.end_rollout("support", r.id, "rolled_back", reason="error rate 0.5 > 0.05")
    assert (done.state, done.weight, done.reason) == ("rolled_back", 0.0, "error rate 0.5 > 0.05")
    assert two.resolve("support").version == 1
    assert two.events("support")[-1].detail["reason"] == "error rate 0.5 > 0.05"
    with pytest.raises(registry.RefNotFoundError, match="no active rollout"):
        two.end_rollout("support", None, "aborted", reason="x")


def test_a_second_controller_cannot_act(two: Registry) -> None:
    r = two.start_rollout("support", 2, steps=[10, 50])
    two.claim_rollout("support", r.id, "ctl-a", ttl_s=30)
    with pytest.raises(registry.LeaseHeldError, match="driven by ctl-a"):
        two.claim_rollout("support", r.id, "ctl-b", ttl_s=30)
    with pytest.raises(registry.LeaseHeldError):
        two.advance_rollout("support", r.id, 1, holder="ctl-b")
    with pytest.raises(registry.LeaseHeldError):
        two.end_rollout("support", r.id, "rolled_back", reason="x", holder="ctl-b")
    with pytest.raises(registry.LeaseHeldError):
        two.advance_rollout("support", r.id, 1)  # a person's step waits for the controller
    two.claim_rollout("support", r.id, "ctl-a", ttl_s=30)  # renewal: not an event
    assert [e.action for e in two.events("support")].count("rollout.lease") == 1
    two.release_rollout("support", r.id, "ctl-a")
    assert two.claim_rollout("support", r.id, "ctl-b", ttl_s=30).holder == "ctl-b"


def test_an_expired_lease_can_be_taken_over(two: Registry) -> None:
    r = two.start_rollout("support", 2, steps=[10, 50])
    two.claim_rollout("support", r.id, "ctl-a", ttl_s=0.01)
    threading.Event().wait(0.05)
    assert two.claim_rollout("support", r.id, "ctl-b", ttl_s=30).holder == "ctl-b"
    with pytest.raises(registry.LeaseHeldError):
        two.advance_rollout("support", r.id, 1, holder="ctl-a")  # the old one stopped owning it


def test_a_person_promotes_or_aborts_over_a_lease(two: Registry) -> None:
    r = two.start_rollout("support", 2, steps=[10, 50])
    two.claim_rollout("support", r.id, "ctl-a", ttl_s=30)
    assert two.end_rollout("support", None, "aborted", reason="by hand").state == "aborted"


def test_two_processes_race_for_one_lease(
    two: Registry, backing_reg: LocalRegistry, settings: registry.RegistrySettings
) -> None:
    r = two.start_rollout("support", 2, steps=[10, 50])
    wins: list[str] = []
    errors: list[Exception] = []

    def contend(holder: str) -> None:
        with reopen(backing_reg, settings) as mine:
            try:
                mine.claim_rollout("support", r.id, holder, ttl_s=30)
                wins.append(holder)
            except registry.LeaseHeldError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=contend, args=(f"ctl-{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(errors) == 5


def test_rollouts_survive_reopening(
    two: Registry, backing_reg: LocalRegistry, settings: registry.RegistrySettings
) -> None:
    r = two.start_rollout("support", 2, steps=[10, 50])
    two.advance_rollout("support", r.id, 1)
    two.close()
    with reopen(backing_reg, settings) as again:
        found = again.rollout("support")
        assert found is not None and (found.id, found.step, found.weight) == (r.id, 1, 50.0)


def test_versions_in_an_active_rollout_cannot_be_removed(two: Registry) -> None:
    two.start_rollout("support", 2, steps=[10])
    with pytest.raises(registry.InUseError, match="active rollout"):
        two.remove("support@2")
    two.end_rollout("support", None, "aborted", reason="x")
    assert two.remove("support@2").version == 2
