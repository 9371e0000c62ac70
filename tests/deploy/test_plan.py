"""Plan options at the edge: durations, steps, limits."""

from __future__ import annotations

import pytest

from deploy.plan import Plan, PlanError, parse_duration, parse_steps


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("30s", 30), ("1.5h", 5400), ("500ms", 0.5), ("2", 2), (" 3 s ", 3)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-1s", "ten minutes", "5d", "1e3s", "nan", "inf"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(PlanError):
        parse_duration(text)


def test_steps() -> None:
    assert parse_steps("10,25,50,100") == [10, 25, 50, 100]
    with pytest.raises(PlanError, match="comma-separated"):
        parse_steps("10;25")


@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"min_requests": 0}, "--min-requests"),
        ({"min_requests": True}, "--min-requests"),
        ({"max_error_rate": 1.5}, "--max-error-rate"),
        ({"max_error_rate": float("nan")}, "--max-error-rate"),
        ({"max_latency_ratio": 0}, "--max-latency-ratio"),
        ({"max_json_violation_rate": -0.1}, "--max-json-violation-rate"),
        ({"interval_s": float("inf")}, "--interval"),
        ({"surprise": 1}, "--surprise"),
    ],
)
def test_bad_limits(values: dict[str, object], flag: str) -> None:
    with pytest.raises(PlanError, match=flag):
        Plan.checked(**values)


def test_plan_round_trips_through_json() -> None:
    plan = Plan.checked(interval_s=2, min_requests=5)
    assert Plan.model_validate(plan.model_dump()) == plan
