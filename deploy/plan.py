"""A rollout's plan: the controller's configuration, validated at the edge and stored in
the registry with the rollout (so a resumed controller judges by the same rules)."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deploy.decision import Thresholds

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class PlanError(ValueError):
    """A plan option is refused; the message names it."""


def parse_duration(text: str) -> float:
    """Seconds in ``10m``, ``30s``, ``1.5h``, ``500ms`` or a plain number of seconds."""
    found = _DURATION.match(text)
    if found is None:
        raise PlanError(f"{text!r} is not a duration (e.g. 10m, 30s, 1h, 500ms)")
    seconds = float(found[1]) * _UNITS[found[2]]
    if not math.isfinite(seconds) or seconds <= 0:
        raise PlanError(f"{text!r} is not a positive duration")
    return seconds


def parse_steps(text: str) -> list[float]:
    """``10,25,50,100`` as numbers (the registry checks range and order)."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise PlanError(f"{text!r} is not a comma-separated list of weights") from None


Rate = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class Plan(BaseModel):
    """How a controller judges each step (defaults: the CLI's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 600.0
    min_requests: Annotated[int, Field(ge=1)] = 20
    max_error_rate: Rate = 0.05
    max_latency_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.5
    max_json_violation_rate: Rate = 0.05
    max_degenerate_rate: Rate = 0.05
    """Absent from a plan stored before the rule existed: a resumed rollout gets it too."""
    eval_gate: dict[str, float | int | str] | None = None
    """The eval gate's result when one ran before the first step (kept for the record)."""

    @field_validator("min_requests", mode="before")
    @classmethod
    def _whole(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("must be a whole number")
        return v

    @classmethod
    def checked(cls, **values: object) -> Plan:
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            flag = "interval" if where == "interval_s" else where.replace("_", "-")
            raise PlanError(f"--{flag}: {first['msg']}") from None

    def thresholds(self) -> Thresholds:
        return Thresholds(
            min_requests=self.min_requests,
            max_error_rate=self.max_error_rate,
            max_latency_ratio=self.max_latency_ratio,
            max_json_violation_rate=self.max_json_violation_rate,
            max_degenerate_rate=self.max_degenerate_rate,
        )
