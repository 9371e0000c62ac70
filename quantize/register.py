"""The last step every stage shares: refuse a variant that missed its gate (logging
``variant.refused``), or register it, forced or not, with its pair results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantize.errors import GateFailedError
from quantize.fidelity import Verdict
from quantize.measure import Echo
from registry import BaseModel, PairInput, Registry


@dataclass(frozen=True, slots=True)
class Outcome:
    variant: BaseModel | None
    verdict: Verdict
    pairs: list[PairInput]
    quantization: dict[str, Any]
    fidelity: dict[str, Any]


def register_or_refuse(
    reg: Registry,
    made: Path,
    *,
    name: str,
    parent: str,
    verdict: Verdict,
    force: bool,
    against: str,
    refused: dict[str, Any],
    quantization: dict[str, Any],
    fidelity: dict[str, Any],
    pairs: list[PairInput],
    who: str | None,
    echo: Echo,
) -> Outcome:
    """Register ``made`` as variant ``name`` of ``parent``; a failed gate without
    ``force`` registers nothing, logs ``variant.refused`` and raises GateFailedError."""
    if not verdict.passed and not force:
        detail = {**refused, "failed_gates": verdict.failed, "reasons": verdict.reasons}
        reg.log_variant_refused(name, detail, who=who)
        raise GateFailedError(
            f"{name} missed its fidelity gate{against} ({', '.join(verdict.failed)}: "
            f"{'; '.join(verdict.reasons)}); nothing was registered. Pass --force to "
            "register it anyway (recorded as forced)"
        )
    echo(f"register {name}")
    variant = reg.add_variant(
        made,
        name=name,
        parent=parent,
        quantization=quantization,
        fidelity=fidelity,
        passed=verdict.passed,
        forced=not verdict.passed,
        pairs=pairs,
        who=who,
    )
    return Outcome(variant, verdict, pairs, quantization, fidelity)
