"""The controller over a real registry, fed figures by a scripted source: it walks the
steps, rolls back, holds on no data or a dead source, resumes after a crash, and never
acts while another controller holds the lease."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import registry
from deploy.backoff import Backoff, delays
from deploy.controller import Controller
from deploy.decision import ArmFigures
from deploy.plan import Plan
from deploy.source import ArmRef, MetricsUnavailable
from registry.local import LocalRegistry

GOOD = ArmFigures(requests=100, errors=0, json_violations=0, degenerate=0, p95_s=0.1)
BAD_JSON = ArmFigures(requests=100, errors=0, json_violations=60, degenerate=0, p95_s=0.1)
THIN = ArmFigures(requests=2, errors=0, json_violations=0, degenerate=0, p95_s=0.1)
PLAN = Plan.checked(interval_s=0.05, min_requests=10).model_dump()


class Scripted:
    """A MetricsSource that answers from a list of (stable, canary) pairs, or raises."""

    def __init__(self, answers: list[tuple[ArmFigures | None, ArmFigures | None] | Exception]):
        self.answers = answers
        self.calls: list[list[ArmRef]] = []

    def describe(self) -> str:
        return "scripted"

    def figures(self, arms: list[ArmRef], window_s: float) -> list[ArmFigures | None]:
        if window_s == 0.0:  # the controller's baseline call
            return [None, None]
        self.calls.append(arms)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


def controller(reg: LocalRegistry, source: Scripted, **kw: object) -> Controller:
    return Controller(reg, source, "support", lease_ttl_s=1.0, say=lambda _: None, **kw)  # type: ignore[arg-type]


def test_a_good_canary_walks_every_step_and_is_promoted(support_registry: LocalRegistry) -> None:
    r = support_registry.start_rollout("support", 2, steps=[10, 50, 100], plan=PLAN)
    source = Scripted([(GOOD, GOOD)])
    final = controller(support_registry, source).run(r.id)
    assert final.state == "promoted" and support_registry.resolve("support").version == 2
    assert [(a.step, a.verdict) for a in final.analyses] == [
        (0, "advance"), (1, "advance"), (2, "promote")
    ]  # fmt: skip
    assert source.calls[0] == [ArmRef("support", 1, "stable"), ArmRef("support", 2, "canary")]
    assert final.analyses[0].figures["canary"]["requests"] == 100


def test_a_bad_canary_is_rolled_back_with_its_reason(support_registry: LocalRegistry) -> None:
    r = support_registry.start_rollout("support", 3, steps=[10, 50, 100], plan=PLAN)
    final = controller(support_registry, Scripted([(GOOD, BAD_JSON)])).run(r.id)
    assert final.state == "rolled_back" and "JSON-contract" in (final.reason or "")
    assert support_registry.resolve("support").version == 1
    assert len(final.analyses) == 1


def test_no_data_nan_and_a_dead_source_hold(support_registry: LocalRegistry) -> None:
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=PLAN)
    nan = ArmFigures(requests=math.nan, errors=0, json_violations=0, degenerate=0, p95_s=math.nan)
    source = Scripted([
        (GOOD, None),
        (GOOD, THIN),
        (GOOD, nan),
        MetricsUnavailable("prometheus http://x is unreachable"),
        (GOOD, GOOD),
        (None, GOOD),
    ])  # fmt: skip
    final = controller(support_registry, source).run(r.id)
    verdicts = [(a.step, a.verdict) for a in final.analyses]
    assert verdicts == [(0, "hold")] * 4 + [(0, "advance"), (1, "promote")]
    reasons = [a.reason for a in final.analyses]
    assert "no figures for the canary" in reasons[0] and "fewer than" in reasons[1]
    assert "not numbers" in reasons[2] and "unreachable" in reasons[3]
    assert final.analyses[2].figures["canary"]["requests"] is None  # NaN stored as null


def test_a_crashed_controller_is_resumed_from_the_registry(
    support_registry: LocalRegistry,
) -> None:
    plan = Plan.checked(interval_s=0.2, min_requests=10).model_dump()
    r = support_registry.start_rollout("support", 2, steps=[10, 50, 100], plan=plan)
    first = controller(support_registry, Scripted([(GOOD, GOOD)]), holder="ctl-a")
    rollout = support_registry.claim_rollout("support", r.id, "ctl-a", ttl_s=0.3)
    first.judge(rollout, Plan.model_validate(plan))  # one step done, then "killed"
    assert support_registry.rollout("support").step == 1  # type: ignore[union-attr]
    second = controller(support_registry, Scripted([(GOOD, GOOD)]), holder="ctl-b")
    final = second.run(r.id)  # waits out ctl-a's lease, then goes on from step 1
    assert final.state == "promoted"
    assert [(a.step, a.who) for a in final.analyses] == [(0, "ctl-a"), (1, "ctl-b"), (2, "ctl-b")]


def test_resuming_waits_for_the_rest_of_the_interval(support_registry: LocalRegistry) -> None:
    plan = Plan.checked(interval_s=600, min_requests=10)
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=plan.model_dump())
    ctl = controller(support_registry, Scripted([(GOOD, GOOD)]))
    assert ctl.due(r, plan) - support_registry.clock() > 590  # 10 minutes after the step began


def test_two_controllers_never_both_act(support_registry: LocalRegistry) -> None:
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=PLAN)
    support_registry.claim_rollout("support", r.id, "ctl-a", ttl_s=30)
    other = controller(support_registry, Scripted([(GOOD, GOOD)]), holder="ctl-b")
    with pytest.raises(registry.LeaseHeldError, match="ctl-a"):
        other.run(r.id)  # gives up after twice the ttl: ctl-a is alive
    assert support_registry.rollout("support").analyses == ()  # type: ignore[union-attr]


def test_a_person_aborting_stops_the_controller(support_registry: LocalRegistry) -> None:
    plan = Plan.checked(interval_s=0.3, min_requests=10).model_dump()
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=plan)
    ctl = controller(support_registry, Scripted([(GOOD, THIN)]))
    timer = threading.Timer(
        0.5, lambda: support_registry.end_rollout("support", None, "aborted", reason="by hand")
    )
    timer.start()
    final = ctl.run(r.id)
    timer.join()
    assert final.state == "aborted" and final.reason == "by hand"
    assert support_registry.resolve("support").version == 1


def test_a_rollout_ended_mid_judgement_stops_the_controller_quietly(
    support_registry: LocalRegistry,
) -> None:
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=PLAN)

    class EndsItWhileAsked(Scripted):
        def figures(self, arms: list[ArmRef], window_s: float) -> list[ArmFigures | None]:
            if window_s:  # between reading the rollout and recording the analysis
                support_registry.end_rollout("support", None, "aborted", reason="by hand")
            return super().figures(arms, window_s)

    final = controller(support_registry, EndsItWhileAsked([(GOOD, GOOD)])).run(r.id)
    assert final.state == "aborted" and final.analyses == ()


def test_a_quarantined_canary_is_rolled_back_at_once(support_registry: LocalRegistry) -> None:
    """Quarantined through the registry while its step has most of a 10-minute interval
    to go, and with figures that would pass: rolled back within a poll, with the
    quarantine's reason, and no figures read for it."""
    plan = Plan.checked(interval_s=600, min_requests=10).model_dump()
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=plan)
    source = Scripted([(GOOD, GOOD)])
    timer = threading.Timer(
        0.3, lambda: support_registry.quarantine("support@2", reason='it answers "" to all')
    )
    timer.start()
    started = time.monotonic()
    final = controller(support_registry, source).run(r.id)  # lease 1 s: polls every 1/3 s
    took = time.monotonic() - started
    timer.join()
    assert final.state == "rolled_back" and took < 2, took
    assert final.reason is not None and final.reason.startswith(
        'canary support@2 is quarantined: it answers "" to all (by '
    )
    [analysis] = final.analyses
    assert analysis.verdict == "rollback" and analysis.step == 0
    assert analysis.figures["quarantine"]["reason"] == 'it answers "" to all'
    assert analysis.figures["canary"] is None and source.calls == []
    assert support_registry.resolve("support").version == 1


def test_a_canary_quarantined_before_the_controller_starts(
    support_registry: LocalRegistry,
) -> None:
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=PLAN)
    support_registry.quarantine("support@2", reason="corrupted the engine", who="gw")
    dead = Scripted([MetricsUnavailable("prometheus http://x is unreachable")])
    final = controller(support_registry, dead).run(r.id)
    assert final.state == "rolled_back" and "corrupted the engine (by gw at " in (
        final.reason or ""
    )


def test_a_lifted_quarantine_is_judged_by_figures_again(support_registry: LocalRegistry) -> None:
    support_registry.quarantine("support@2", reason="suspected", who="gw")
    support_registry.lift_quarantine("support@2", who="ann")
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=PLAN)
    final = controller(support_registry, Scripted([(GOOD, GOOD)])).run(r.id)
    assert final.state == "promoted"


class Flaky:
    """A registry that does not answer (RegistryUnavailableError) the calls ``fail``
    picks, and can run ``during`` while it is down (a change the controller cannot see);
    every other call goes to the real registry. ``ahead_s`` sets its clock ahead of this
    host's. A narrow stand-in for a registry service behind a flaky network."""

    def __init__(
        self,
        inner: LocalRegistry,
        fail: Callable[[str, int], bool],
        during: Callable[[], None] | None = None,
        ahead_s: float = 0.0,
    ) -> None:
        self.inner = inner
        self.fail = fail
        self.during = during
        self.ahead_s = ahead_s
        self.calls: list[str] = []

    def clock(self) -> float:
        self.calls.append("clock")
        return self.inner.clock() + self.ahead_s

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.fail(name, self.calls.count(name)):
                if self.during is not None:
                    self.during()
                raise registry.RegistryUnavailableError(f"{name}: connection refused")
            return method(*args, **kwargs)

        return call


FAST = Backoff(first_s=0.01, factor=2, cap_s=0.05, deadline_s=1.0)


def test_the_registry_down_for_a_while_is_waited_out(support_registry: LocalRegistry) -> None:
    """The first 4 claims (reads of the rollout) fail: the controller backs off, says so,
    and walks the rollout to the end once the registry answers."""
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=PLAN)
    flaky = Flaky(support_registry, lambda name, n: name == "claim_rollout" and n <= 4)
    said: list[str] = []
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        time.sleep(s)

    ctl = Controller(flaky, Scripted([(GOOD, GOOD)]), "support", lease_ttl_s=1.0,  # type: ignore[arg-type]
                     backoff=FAST, sleep=sleep, say=said.append)  # fmt: skip
    final = ctl.run(r.id)
    assert final.state == "promoted"
    assert slept[:4] == delays(FAST)[:4]  # 0.01, 0.02, 0.04, 0.05
    assert sum("registry unavailable (claiming rollout" in line for line in said) == 4


def test_nothing_is_done_on_a_view_read_before_a_failure(
    support_registry: LocalRegistry,
) -> None:
    """Advancing fails (the registry is down), and meanwhile the canary is quarantined:
    the controller does not retry the advance it decided on the old view; it re-reads,
    sees the quarantine, and rolls back."""
    r = support_registry.start_rollout("support", 2, steps=[10, 50, 100], plan=PLAN)
    flaky = Flaky(
        support_registry,
        lambda name, n: name == "advance_rollout" and n == 1,
        during=lambda: support_registry.quarantine("support@2", reason="bad answers"),
    )
    said: list[str] = []
    ctl = Controller(flaky, Scripted([(GOOD, GOOD)]), "support", lease_ttl_s=1.0,  # type: ignore[arg-type]
                     backoff=FAST, say=said.append)  # fmt: skip
    final = ctl.run(r.id)
    assert final.state == "rolled_back" and "bad answers" in (final.reason or "")
    assert support_registry.resolve("support").version == 1
    assert flaky.calls.count("advance_rollout") == 1  # never retried
    after = flaky.calls[flaky.calls.index("advance_rollout") + 1 :]
    assert after[0] == "claim_rollout"  # the next thing done is a re-read
    assert [(a.step, a.verdict) for a in final.analyses] == [(0, "advance"), (0, "rollback")]
    assert any("re-reading before acting" in line for line in said)


def test_a_registry_down_past_the_deadline_stops_the_controller(
    support_registry: LocalRegistry,
) -> None:
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=PLAN)
    support_registry.claim_rollout("support", r.id, "ctl-a", ttl_s=30)
    down = Flaky(support_registry, lambda name, n: name != "claim_rollout" or n > 1)
    ctl = Controller(down, Scripted([(GOOD, GOOD)]), "support", holder="ctl-a",  # type: ignore[arg-type]
                     lease_ttl_s=1.0, backoff=FAST, say=lambda _: None)  # fmt: skip
    with pytest.raises(registry.RegistryUnavailableError):
        ctl.run(r.id)
    assert support_registry.rollout("support").analyses == ()  # type: ignore[union-attr]
    assert down.calls.count("claim_rollout") == 1 + 1 + len(delays(FAST))


def test_due_steps_are_judged_by_the_registrys_clock(support_registry: LocalRegistry) -> None:
    """The registry's clock is an hour ahead of this host's: a 10-minute step it began is
    due by its clock, so the controller judges now instead of waiting on its own."""
    plan = Plan.checked(interval_s=600, min_requests=10).model_dump()
    r = support_registry.start_rollout("support", 2, steps=[10, 100], plan=plan)
    ahead = Flaky(support_registry, lambda name, n: False, ahead_s=3600)
    started = time.monotonic()
    final = controller(ahead, Scripted([(GOOD, GOOD)])).run(r.id)  # type: ignore[arg-type]
    assert final.state == "promoted" and time.monotonic() - started < 5
    assert "clock" in ahead.calls
