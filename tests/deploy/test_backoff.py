"""The back-off schedule as a pure function, and the retry loop over a fake clock."""

from __future__ import annotations

import pytest

import registry
from deploy.backoff import Backoff, delays, retrying


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Backoff(first_s=0.5, factor=2, cap_s=15, deadline_s=0), []),
        (Backoff(first_s=0.5, factor=2, cap_s=15, deadline_s=0.5), [0.5]),
        (Backoff(first_s=0.5, factor=2, cap_s=15, deadline_s=3.4), [0.5, 1]),  # 2 more: 3.5
        (Backoff(first_s=0.5, factor=2, cap_s=15, deadline_s=3.5), [0.5, 1, 2]),
        (Backoff(first_s=1, factor=2, cap_s=4, deadline_s=20), [1, 2, 4, 4, 4, 4]),
        (Backoff(first_s=1, factor=1, cap_s=4, deadline_s=3), [1, 1, 1]),
        (Backoff(first_s=5, factor=3, cap_s=2, deadline_s=7), [2, 2, 2]),
    ],
)
def test_delays(policy: Backoff, expected: list[float]) -> None:
    assert delays(policy) == expected


def test_the_default_schedule_is_capped_and_ends_by_its_deadline() -> None:
    policy = Backoff()
    found = delays(policy)
    assert found[:6] == [0.5, 1, 2, 4, 8, 15]
    assert max(found) == policy.cap_s and sum(found) <= policy.deadline_s
    assert sum(found) + policy.cap_s > policy.deadline_s  # nothing more fits


@pytest.mark.parametrize(
    "policy", [Backoff(first_s=0), Backoff(factor=0.5), Backoff(cap_s=0), Backoff(deadline_s=-1)]
)
def test_a_bad_policy_is_refused(policy: Backoff) -> None:
    with pytest.raises(ValueError, match="not a back-off"):
        delays(policy)


class Flaky:
    """Raises RegistryUnavailableError for the first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise registry.RegistryUnavailableError(f"down (call {self.calls})")
        return "answer"


POLICY = Backoff(first_s=1, factor=2, cap_s=4, deadline_s=20)  # 1, 2, 4, 4, 4, 4


def test_retrying_waits_the_schedule_and_returns_the_answer() -> None:
    slept: list[float] = []
    said: list[str] = []
    flaky = Flaky(3)
    assert retrying(flaky, POLICY, what="read", sleep=slept.append, say=said.append) == "answer"
    assert flaky.calls == 4 and slept == [1, 2, 4]
    assert said[0] == "registry unavailable (read: down (call 1)); try 2 in 1 s"


def test_retrying_gives_up_when_the_schedule_is_spent() -> None:
    slept: list[float] = []
    said: list[str] = []
    flaky = Flaky(100)
    with pytest.raises(registry.RegistryUnavailableError, match="call 7"):
        retrying(flaky, POLICY, what="read", sleep=slept.append, say=said.append)
    assert flaky.calls == 7 and slept == delays(POLICY)
    assert "giving up" in said[-1]


def test_other_errors_are_not_retried() -> None:
    def refused() -> None:
        raise registry.LeaseHeldError("driven by someone else")

    with pytest.raises(registry.LeaseHeldError):
        retrying(refused, POLICY, what="claim", sleep=pytest.fail, say=lambda _: None)
