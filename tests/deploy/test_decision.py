"""The step verdict, table-driven: thin, missing or NaN data holds; only figures pass."""

from __future__ import annotations

import math

import pytest

from deploy.decision import ArmFigures, Thresholds, decide

T = Thresholds(min_requests=20, max_error_rate=0.05, max_latency_ratio=1.5,
               max_json_violation_rate=0.05)  # fmt: skip
NAN = math.nan


def arm(requests: float = 100, errors: float = 0, json: float = 0, p95: float = 0.1) -> ArmFigures:
    return ArmFigures(requests=requests, errors=errors, json_violations=json, p95_s=p95)


GOOD = arm()


@pytest.mark.parametrize(
    ("stable", "canary", "weight", "last", "action", "reason"),
    [
        # data rules: hold, never pass
        (GOOD, None, 10, False, "hold", "no figures for the canary"),
        (None, GOOD, 10, False, "hold", "no figures for the stable"),
        (GOOD, arm(requests=NAN), 10, False, "hold", "not numbers"),
        (GOOD, arm(errors=NAN), 10, False, "hold", "not numbers"),
        (GOOD, arm(json=math.inf), 10, False, "hold", "not numbers"),
        (arm(requests=NAN), GOOD, 10, False, "hold", "stable arm's figures are not numbers"),
        (GOOD, arm(requests=0), 10, False, "hold", "served 0 requests"),
        (GOOD, arm(requests=19), 10, True, "hold", "fewer than --min-requests 20"),
        (arm(requests=5), GOOD, 10, False, "hold", "stable arm served 5"),
        (GOOD, arm(p95=NAN), 10, False, "hold", "p95 latency unknown"),
        (arm(p95=NAN), GOOD, 10, False, "hold", "p95 latency unknown"),
        (arm(p95=0.0), GOOD, 10, False, "hold", "p95 latency unknown"),
        # failures: roll back (even with the stable arm's data missing)
        (None, arm(errors=6), 10, False, "rollback", "error rate 0.060"),
        (GOOD, arm(json=50), 10, False, "rollback", "JSON-contract violation rate 0.500"),
        (GOOD, arm(p95=0.16), 10, False, "rollback", "1.60x"),
        (GOOD, arm(requests=19, errors=19), 10, False, "hold", "fewer than"),
        # at the limits: pass
        (GOOD, arm(errors=5), 10, False, "advance", "step passed"),
        (GOOD, arm(json=5, p95=0.15), 25, False, "advance", "p95 1.50x"),
        (GOOD, GOOD, 50, True, "promote", "last step passed"),
        # at 100% the stable arm has no traffic: only the canary is judged
        (None, GOOD, 100, True, "promote", "last step passed"),
        (arm(requests=0, p95=NAN), GOOD, 100, True, "promote", "canary served 100"),
        (None, arm(json=30), 100, True, "rollback", "JSON-contract"),
        (None, arm(requests=3), 100, True, "hold", "fewer than"),
    ],
)
def test_decide(
    stable: ArmFigures | None,
    canary: ArmFigures | None,
    weight: float,
    last: bool,
    action: str,
    reason: str,
) -> None:
    verdict = decide(T, stable, canary, weight=weight, last_step=last)
    assert verdict.action == action
    assert reason in verdict.reason


def test_rates_of_no_requests_are_nan_not_zero() -> None:
    assert math.isnan(arm(requests=0).error_rate)
    assert math.isnan(arm(requests=0).json_violation_rate)


def test_min_requests_of_one_still_needs_a_request() -> None:
    t = Thresholds(min_requests=1)
    assert decide(t, GOOD, arm(requests=0, p95=NAN), weight=10, last_step=True).action == "hold"
