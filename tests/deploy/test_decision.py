"""The step verdict, table-driven: thin, missing or NaN data holds; only figures pass."""

from __future__ import annotations

import math

import pytest

from deploy.decision import ArmFigures, Thresholds, decide, quarantined
from registry import Quarantine

T = Thresholds(min_requests=20, max_error_rate=0.05, max_latency_ratio=1.5,
               max_json_violation_rate=0.05, max_degenerate_rate=0.05)  # fmt: skip
NAN = math.nan


def arm(
    requests: float = 100, errors: float = 0, json: float = 0, deg: float = 0, p95: float = 0.1
) -> ArmFigures:
    return ArmFigures(
        requests=requests, errors=errors, json_violations=json, degenerate=deg, p95_s=p95
    )


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
        # degenerate answers not counted (a gateway without the counter): unknown, a hold
        (GOOD, arm(deg=NAN), 10, False, "hold", "degenerate answers unknown"),
        (GOOD, arm(deg=NAN), 100, True, "hold", "upgrade the ones that do not"),
        (GOOD, arm(deg=math.inf), 10, False, "hold", "degenerate answers unknown"),
        (arm(deg=NAN), GOOD, 10, False, "hold", "stable arm's figures are not numbers"),
        (GOOD, arm(errors=NAN, deg=NAN), 10, False, "hold", "errors, degenerate answers"),
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
        (GOOD, arm(deg=6), 10, False, "rollback", "degenerate-answer rate 0.060 (6 of 100"),
        (GOOD, arm(deg=100, p95=0.01), 10, False, "rollback", "--max-degenerate-rate 0.05"),
        (None, arm(deg=6), 10, False, "rollback", "degenerate-answer rate"),
        (arm(deg=NAN), arm(deg=6), 10, False, "rollback", "degenerate-answer rate"),
        (GOOD, arm(requests=19, deg=19), 10, False, "hold", "fewer than"),
        (GOOD, arm(errors=6, deg=50), 10, False, "rollback", "error rate 0.060"),  # first rule
        (GOOD, arm(json=6, deg=50), 10, False, "rollback", "JSON-contract"),
        # at the limits: pass
        (GOOD, arm(errors=5), 10, False, "advance", "step passed"),
        (GOOD, arm(deg=5), 10, False, "advance", "degenerate 0.050"),
        (arm(deg=90), GOOD, 10, False, "advance", "step passed"),  # stable's own are not judged
        (GOOD, arm(json=5, p95=0.15), 25, False, "advance", "p95 1.50x"),
        (GOOD, GOOD, 50, True, "promote", "last step passed"),
        # at 100% the stable arm has no traffic: only the canary is judged
        (None, GOOD, 100, True, "promote", "last step passed"),
        (arm(requests=0, p95=NAN), GOOD, 100, True, "promote", "canary served 100"),
        (None, arm(json=30), 100, True, "rollback", "JSON-contract"),
        (None, arm(deg=30), 100, True, "rollback", "degenerate-answer rate 0.300"),
        (arm(requests=0, deg=NAN, p95=NAN), GOOD, 100, True, "promote", "last step passed"),
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
    assert math.isnan(arm(requests=0).degenerate_rate)


@pytest.mark.parametrize(("limit", "degenerate", "action"), [(1.0, 100, "promote"),
                                                             (0.0, 1, "rollback"),
                                                             (0.0, 0, "promote")])  # fmt: skip
def test_the_degenerate_limit_is_a_flag(limit: float, degenerate: float, action: str) -> None:
    """1 turns the rule off (a rate is never above 1); 0 tolerates no degenerate answer."""
    t = Thresholds(min_requests=20, max_degenerate_rate=limit)
    assert decide(t, GOOD, arm(deg=degenerate), weight=50, last_step=True).action == action


def test_min_requests_of_one_still_needs_a_request() -> None:
    t = Thresholds(min_requests=1)
    assert decide(t, GOOD, arm(requests=0, p95=NAN), weight=10, last_step=True).action == "hold"


@pytest.mark.parametrize(
    ("quarantine", "action", "reason"),
    [
        (None, None, None),
        (
            Quarantine(reason="it answers degenerately", who="gateway gw-1", at="2026-12-04T17:00"),
            "rollback",
            "canary support@2 is quarantined: it answers degenerately (by gateway gw-1 at "
            "2026-12-04T17:00; `registry quarantine rm support@2` lifts it)",
        ),
    ],
)
def test_a_quarantined_canary_is_rolled_back(
    quarantine: Quarantine | None, action: str | None, reason: str | None
) -> None:
    verdict = quarantined("support@2", quarantine)
    assert (verdict and verdict.action, verdict and verdict.reason) == (action, reason)
