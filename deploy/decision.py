"""The verdict on one step of a rollout: a pure function of the two arms' figures.

Order of the rules (the first that applies decides):

0. the canary version is quarantined in the registry (a gateway found it corrupting the
   engine or answering degenerately, or a person said so): **rollback** at once, with the
   quarantine's reason, whatever the figures say (:func:`quarantined`; gateways refuse a
   quarantined version, so its arm would have no traffic to judge);
1. no figures for the canary, or any that is NaN/infinite (an unknown count of
   degenerate answers included), or fewer than ``min_requests`` canary requests: **hold**
   (never judge on no data; a NaN is not 0);
2. the canary's error rate (5xx), JSON-contract violation rate or degenerate-answer rate
   (answers that came back empty or one short piece repeated) above its limit:
   **rollback**;
3. below 100 %: the same data rules for the stable arm (**hold**), then the canary's p95
   latency over the stable arm's above ``max_latency_ratio``: **rollback** (an unknown
   p95 on either arm: **hold**). At 100 % the stable arm has no traffic to compare with,
   so only rules 1-2 apply;
4. otherwise the step passed: **promote** at the last step, else **advance**.

Flagger counts "no values" as a failed check and Argo errors on an empty result
(argo-rollouts#1466); a NaN read as 0 has passed analyses that should have failed. Here
thin or missing data is a hold with its reason, and only figures can pass a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from registry import Quarantine

Action = Literal["advance", "hold", "promote", "rollback"]


@dataclass(frozen=True)
class ArmFigures:
    """One arm over the judged window: requests answered, those that failed (5xx), JSON
    contract failures (the gateway refused a constrained answer), degenerate answers (a
    200 whose text is empty or one short piece repeated; NaN when the gateways do not
    count them), p95 latency (s)."""

    requests: float
    errors: float
    json_violations: float
    degenerate: float
    p95_s: float

    def unknown(self) -> list[str]:
        """The counts that are not numbers (NaN or infinite), by name."""
        counts = {
            "requests": self.requests,
            "errors": self.errors,
            "JSON violations": self.json_violations,
            "degenerate answers": self.degenerate,
        }
        return [name for name, value in counts.items() if not math.isfinite(value)]

    def finite(self) -> bool:
        return not self.unknown()

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else math.nan

    @property
    def json_violation_rate(self) -> float:
        return self.json_violations / self.requests if self.requests > 0 else math.nan

    @property
    def degenerate_rate(self) -> float:
        return self.degenerate / self.requests if self.requests > 0 else math.nan


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 20
    max_error_rate: float = 0.05
    max_latency_ratio: float = 1.5
    max_json_violation_rate: float = 0.05
    max_degenerate_rate: float = 0.05


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str


def quarantined(canary_ref: str, quarantine: Quarantine | None) -> Verdict | None:
    """Rule 0: a quarantined canary is rolled back with the quarantine's reason."""
    if quarantine is None:
        return None
    return Verdict(
        "rollback",
        f"canary {canary_ref} is quarantined: {quarantine.reason} (by {quarantine.who} at "
        f"{quarantine.at}; `registry quarantine rm {canary_ref}` lifts it)",
    )


def _data_problem(arm: str, figures: ArmFigures | None, min_requests: int) -> str | None:
    if figures is None:
        return f"no figures for the {arm} arm"
    unknown = figures.unknown()
    if unknown:
        hint = (
            " (every gateway must count them in loraport_degenerate_answers_total: "
            "upgrade the ones that do not)"
            if "degenerate answers" in unknown
            else ""
        )
        return f"the {arm} arm's figures are not numbers: {', '.join(unknown)} unknown{hint}"
    if figures.requests < min_requests:
        return (
            f"the {arm} arm served {figures.requests:.0f} requests in the window, fewer than "
            f"--min-requests {min_requests}"
        )
    return None


def decide(
    t: Thresholds,
    stable: ArmFigures | None,
    canary: ArmFigures | None,
    *,
    weight: float,
    last_step: bool,
) -> Verdict:
    """The verdict on a step at canary ``weight`` (percent); see the module docstring."""
    problem = _data_problem("canary", canary, t.min_requests)
    if problem is not None or canary is None:
        return Verdict("hold", problem or "no figures")
    if canary.error_rate > t.max_error_rate:
        return Verdict(
            "rollback",
            f"canary error rate {canary.error_rate:.3f} ({canary.errors:.0f} of "
            f"{canary.requests:.0f}) is above --max-error-rate {t.max_error_rate:g}",
        )
    if canary.json_violation_rate > t.max_json_violation_rate:
        return Verdict(
            "rollback",
            f"canary JSON-contract violation rate {canary.json_violation_rate:.3f} "
            f"({canary.json_violations:.0f} of {canary.requests:.0f}) is above "
            f"--max-json-violation-rate {t.max_json_violation_rate:g}",
        )
    if canary.degenerate_rate > t.max_degenerate_rate:
        return Verdict(
            "rollback",
            f"canary degenerate-answer rate {canary.degenerate_rate:.3f} "
            f"({canary.degenerate:.0f} of {canary.requests:.0f} answers empty or one piece "
            f"repeated) is above --max-degenerate-rate {t.max_degenerate_rate:g}",
        )
    compared = ""
    if weight < 100:
        problem = _data_problem("stable", stable, t.min_requests)
        if problem is not None or stable is None:
            return Verdict("hold", problem or "no figures")
        ratio = canary.p95_s / stable.p95_s if stable.p95_s > 0 else math.nan
        if not math.isfinite(ratio):
            return Verdict(
                "hold",
                f"p95 latency unknown (canary {canary.p95_s!r} s, stable {stable.p95_s!r} s)",
            )
        if ratio > t.max_latency_ratio:
            return Verdict(
                "rollback",
                f"canary p95 {canary.p95_s:.3f} s is {ratio:.2f}x the stable arm's "
                f"{stable.p95_s:.3f} s, above --max-latency-ratio {t.max_latency_ratio:g}",
            )
        compared = f", p95 {ratio:.2f}x stable"
    summary = (
        f"canary served {canary.requests:.0f} requests at {weight:g}%: error rate "
        f"{canary.error_rate:.3f}, JSON violations {canary.json_violation_rate:.3f}, "
        f"degenerate {canary.degenerate_rate:.3f}{compared}"
    )
    if last_step:
        return Verdict("promote", f"last step passed ({summary})")
    return Verdict("advance", f"step passed ({summary})")
