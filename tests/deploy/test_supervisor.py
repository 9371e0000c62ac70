"""``deploy run``'s supervisor: which rollouts it takes (a pure table), and over a real
registry with scripted figures: it drives every active rollout to its end, picks up one
recorded while it runs, leaves one another live controller holds, takes over a dead
one's after its lease expires, and releases its leases when stopped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

import registry
from deploy.plan import Plan
from deploy.supervisor import Supervisor, active_rollouts, to_drive
from registry import Rollout
from registry.local import LocalRegistry
from tests.deploy.test_controller import BAD_JSON, GOOD, Scripted
from tests.support.synthetic import write_adapter

PLAN = Plan.checked(interval_s=0.05, min_requests=10).model_dump()
ME = "host:1:me"


def rollout(rid: int, *, state: str = "active", holder: str | None = None,
            lease_until: float | None = None) -> Rollout:  # fmt: skip
    return Rollout(
        id=rid, name=f"n{rid}", stable=1, canary=2, steps=(10.0, 100.0), plan={}, step=0,
        weight=10.0, state=state, reason=None, started_by="t", started_at="", step_started_at="",
        ended_at=None, holder=holder, lease_until=lease_until,
    )  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "driving", "expected"),
    [
        (rollout(1), set(), [1]),  # free: take it
        (rollout(1), {1}, []),  # driven here already
        (rollout(1, state="promoted"), set(), []),  # ended
        (rollout(1, state="rolled_back"), set(), []),
        (rollout(1, holder="other", lease_until=110.0), set(), []),  # another's live lease
        (rollout(1, holder="other", lease_until=100.0), set(), []),  # live up to its expiry
        (rollout(1, holder="other", lease_until=99.0), set(), [1]),  # expired: take it over
        (rollout(1, holder="other", lease_until=None), set(), [1]),
        (rollout(1, holder=ME, lease_until=110.0), set(), [1]),  # ours (a driver that died)
        (rollout(1, holder=ME, lease_until=110.0), {1}, []),
    ],
)
def test_which_rollouts_are_taken(case: Rollout, driving: set[int], expected: list[int]) -> None:
    assert [r.id for r in to_drive([case], driving, ME, now=100.0)] == expected


def test_several_at_once_keep_their_order() -> None:
    found = [rollout(3), rollout(1, holder="x", lease_until=200.0), rollout(2)]
    assert [r.id for r in to_drive(found, {3}, ME, now=100.0)] == [2]


def add_name(reg: LocalRegistry, tmp: Path, name: str) -> None:
    for seed in (10, 11):
        reg.push_adapter(write_adapter(tmp / f"{name}{seed}" / name, seed=seed), name=name,
                         allow_unknown_dataset=True)  # fmt: skip


@contextmanager
def supervising(
    location: str, source: Callable[[], Scripted], **kw: object
) -> Iterator[tuple[Supervisor, list[str]]]:
    said: list[str] = []
    sup = Supervisor(
        open_registry=lambda: registry.open(location, create=False), source=source,
        lease_ttl_s=1.0, scan_s=0.3, min_gap_s=0.05, say=said.append, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    thread = threading.Thread(target=sup.run)
    thread.start()
    try:
        yield sup, said
    finally:
        sup.stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), said


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def final(location: str, name: str) -> Rollout:
    with registry.open(location, create=False) as reg:
        return reg.rollouts(name)[-1]


def test_every_active_rollout_is_driven_to_its_end(
    support_registry: LocalRegistry, tmp_path: Path
) -> None:
    reg = support_registry
    add_name(reg, tmp_path, "faq")
    location = reg.location
    reg.start_rollout("support", 2, steps=[10, 50, 100], plan=PLAN)
    reg.start_rollout("faq", 2, steps=[10, 100], plan=PLAN)
    assert [r.name for r in active_rollouts(reg)] == ["faq", "support"]
    # faq's canary is bad, support's good: each driver reads its own rollout's arms
    answers = {"faq": (GOOD, BAD_JSON), "support": (GOOD, GOOD)}

    class ByName(Scripted):
        def figures(self, arms, window_s):  # type: ignore[no-untyped-def]
            return [None, None] if window_s == 0 else list(answers[arms[0].name])

    with supervising(location, lambda: ByName([])) as (_, said):
        wait_for(lambda: not final(location, "support").active, "support to end")
        wait_for(lambda: not final(location, "faq").active, "faq to end")
        # a rollout recorded while it runs is picked up (a registry write wakes it)
        reg.set_alias("support", "production", 1)
        reg.start_rollout("support", 3, steps=[50, 100], plan=PLAN)
        wait_for(lambda: final(location, "support").canary == 3
                 and final(location, "support").state == "promoted", "support@3")  # fmt: skip
    assert final(location, "faq").state == "rolled_back"
    assert [(a.step, a.verdict) for a in final(location, "support").analyses] == [
        (0, "advance"), (1, "promote")
    ]  # fmt: skip
    assert reg.resolve("support").version == 3 and reg.resolve("faq").version == 1
    assert any("driving rollout" in line for line in said)


def test_a_live_holder_is_left_alone_and_a_dead_ones_rollout_taken_over(
    support_registry: LocalRegistry,
) -> None:
    reg = support_registry
    slow = Plan.checked(interval_s=60, min_requests=10).model_dump()
    r = reg.start_rollout("support", 2, steps=[10, 100], plan=slow)
    reg.claim_rollout("support", r.id, "other-controller", ttl_s=1.5)
    with supervising(reg.location, lambda: Scripted([(GOOD, GOOD)])) as (sup, said):
        time.sleep(0.6)  # several scans while the other's lease lives
        assert sup.drivers == {} and reg.rollout("support").holder == "other-controller"  # type: ignore[union-attr]
        # the other one is dead: its lease expires and this supervisor takes the rollout
        wait_for(lambda: reg.rollout("support").holder == sup.holder, "the take-over")  # type: ignore[union-attr]
    # stopped mid-rollout: the lease is released at once, the rollout is left active
    left = reg.rollout("support")
    assert left is not None and left.holder is None and left.step == 0
    assert any("stopped; lease" in line for line in said), said


def test_a_driver_that_fails_is_picked_up_again(support_registry: LocalRegistry) -> None:
    reg = support_registry
    reg.start_rollout("support", 2, steps=[10, 100], plan=PLAN)
    calls = {"n": 0}

    class FailsOnce(Scripted):
        def figures(self, arms, window_s):  # type: ignore[no-untyped-def]
            if window_s == 0:
                return [None, None]
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("a bug in one source")
            return [GOOD, GOOD]

    with supervising(reg.location, lambda: FailsOnce([])) as (_, said):
        wait_for(lambda: reg.rollout("support") is None, "the promotion")
    assert reg.rollouts("support")[-1].state == "promoted"
    assert any("RuntimeError('a bug in one source')" in line for line in said), said


def test_the_rollouts_state_is_exposed_as_metrics() -> None:
    from prometheus_client import generate_latest

    from deploy.metrics import RolloutMetrics

    m = RolloutMetrics()
    r = replace_started(rollout(1), "2026-12-05T10:00:00+00:00")
    m.observe([r], now=r_epoch(r) + 30, drivers=1)
    text = generate_latest(m.registry).decode()
    assert 'loraport_rollout_active{adapter="n1"} 1.0' in text
    assert 'loraport_rollout_canary_weight_percent{adapter="n1"} 10.0' in text
    assert 'loraport_rollout_step_age_seconds{adapter="n1"} 30.0' in text
    assert 'loraport_rollout_interval_seconds{adapter="n1"} 600.0' in text  # the default plan
    m.observe([], now=0, drivers=0)
    m.count_end(replace(r, state="promoted"))
    text = generate_latest(m.registry).decode()
    assert 'loraport_rollout_active{adapter="n1"} 0.0' in text
    assert 'loraport_rollouts_ended_total{adapter="n1",state="promoted"} 1.0' in text


def replace_started(r: Rollout, at: str) -> Rollout:
    return replace(r, started_at=at, step_started_at=at)


def r_epoch(r: Rollout) -> float:
    from deploy.controller import epoch

    return epoch(r.step_started_at)
