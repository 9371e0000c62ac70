"""The canary arm choice, table-driven: a pure function of the request's stable key."""

from __future__ import annotations

import pytest

from server.canary import CANARY, STABLE, Split, position, sticky_key


@pytest.mark.parametrize(
    ("user", "session", "key"),
    [
        ("alice", "s1", "u:alice"),  # user wins over the session header
        ("alice", None, "u:alice"),
        (None, "s1", "s:s1"),
        ("", "s1", "s:s1"),  # an empty user names nobody
        (None, "", None),
        (None, None, None),
        ("s1", None, "u:s1"),  # a user and a session of one spelling stay apart
    ],
)
def test_sticky_key(user: str | None, session: str | None, key: str | None) -> None:
    assert sticky_key(user, session) == key


def test_position_is_fixed_per_key_and_rollout() -> None:
    assert position("u:alice", "support#1") == position("u:alice", "support#1")
    assert 0 <= position("u:alice", "support#1") < 100
    # another rollout of the name reshuffles who goes first
    moved = sum(
        position(f"u:{i}", "support#1") != position(f"u:{i}", "support#2") for i in range(50)
    )
    assert moved == 50


@pytest.mark.parametrize(
    ("weight", "key", "draw", "arm"),
    [
        (0.0, "u:alice", 0.0, STABLE),  # weight 0 (rolled back): never canary
        (100.0, "u:alice", 0.99, CANARY),  # weight 100: always canary
        (50.0, None, 0.10, CANARY),  # no key: the per-request draw decides
        (50.0, None, 0.60, STABLE),
        (50.0, None, 0.4999, CANARY),
        (50.0, None, 0.5, STABLE),
    ],
)
def test_arm_edges(weight: float, key: str | None, draw: float, arm: str) -> None:
    assert Split(weight, "support#1").arm(key, draw=lambda: draw) == arm


def test_a_keyed_request_ignores_the_draw() -> None:
    split = Split(50.0, "support#1")
    arms = {split.arm("u:alice", draw=lambda d=d: d) for d in (0.0, 0.3, 0.7, 0.99)}
    assert len(arms) == 1


@pytest.mark.parametrize("weight", [1.0, 10.0, 25.0, 50.0, 90.0])
def test_share_matches_weight_over_many_users(weight: float) -> None:
    split = Split(weight, "support#7")
    users = 20_000
    canary = sum(split.arm(f"u:user-{i}") == CANARY for i in range(users))
    assert abs(100 * canary / users - weight) < 1.0


def test_raising_the_weight_only_moves_users_to_canary() -> None:
    users = [f"u:user-{i}" for i in range(5_000)]
    before = {u for u in users if Split(10, "support#3").arm(u) == CANARY}
    after = {u for u in users if Split(25, "support#3").arm(u) == CANARY}
    assert before < after
