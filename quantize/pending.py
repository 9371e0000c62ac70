"""``quantize eval --pending``: measure every adapter x variant pair that has no result yet.

A push over HTTP leaves its pairs unmeasured (the server does not run ``.venv-quantize``
on a request's path), and so does ``registry push --no-eval`` or an after-push hook that
failed; the gateway refuses such a pair until it is measured. This is the catch-up job:
it asks the registry (:mod:`registry.pending`, the one home of the rule) which pairs wait,
and measures them one variant at a time with :func:`quantize.stage.eval_pairs` (the
parent and the variant pulled once per variant, all its waiting adapters in one worker
run), recording each pair as it goes. A variant whose measurement fails does not stop the
others; the command then exits with :class:`PairsNotEvaluatedError` naming what is left.
Running it again measures only what is still missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantize.errors import (
    EvalSetError,
    PairsNotEvaluatedError,
    QuantizeEnvironmentError,
    QuantizeError,
    UnsupportedArchitectureError,
)
from quantize.measure import Echo
from quantize.recipes import RecipeError
from quantize.settings import QuantizeSettings
from quantize.stage import eval_pairs
from registry import PairInput, Registry, RegistryError
from registry.pending import PendingPair, pending_in


@dataclass(frozen=True, slots=True)
class Measured:
    variant: str
    pair: PairInput


@dataclass(frozen=True, slots=True)
class Missed:
    variant: str
    adapters: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class PendingOutcome:
    """What waited, what got measured, and what could not be (by variant)."""

    pending: list[PendingPair]
    measured: list[Measured]
    missed: list[Missed]


def by_variant(pending: list[PendingPair]) -> dict[str, tuple[str, ...]]:
    """The waiting adapters of each variant, in the order given."""
    grouped: dict[str, list[str]] = {}
    for p in pending:
        grouped.setdefault(p.variant, []).append(p.adapter)
    return {variant: tuple(refs) for variant, refs in grouped.items()}


def _chosen(reg: Registry, variant: str | None) -> list[PendingPair]:
    if variant is None:
        return pending_in(reg)
    name = reg.base(variant).name
    info = reg.variant(name)
    if info is None:
        raise UnsupportedArchitectureError(
            f"{name} is not a variant (it has no parent); `quantize eval --pending` without "
            "--variant measures every variant's waiting pairs"
        )
    if info.merged:
        raise UnsupportedArchitectureError(
            f"{name} is a merged deployment: it serves no other adapter, so no pair waits on it"
        )
    return pending_in(reg, [info])


def eval_pending(
    reg: Registry,
    variant: str | None = None,
    *,
    who: str | None = None,
    settings: QuantizeSettings | None = None,
    echo: Echo = lambda _: None,
) -> PendingOutcome:
    """Measure every waiting pair (on ``variant`` only, if given) and record each.

    An eval set that is missing or a missing ``.venv-quantize`` stops at once (every
    variant would fail the same way); any other failure is kept per variant, the rest
    measured, and PairsNotEvaluatedError raised at the end.
    """
    settings = settings or QuantizeSettings()
    pending = _chosen(reg, variant)
    groups = by_variant(pending)
    if groups:
        echo(f"{len(pending)} pair(s) to measure on {len(groups)} variant(s)")
    measured: list[Measured] = []
    missed: list[Missed] = []
    for index, (name, refs) in enumerate(groups.items(), start=1):
        echo(f"variant {name} [{index}/{len(groups)}]: measuring {', '.join(refs)}")
        try:
            pairs = eval_pairs(reg, name, refs, who=who, settings=settings, echo=echo)
        except (EvalSetError, QuantizeEnvironmentError):
            raise
        except (QuantizeError, RegistryError, RecipeError) as exc:
            echo(f"variant {name}: not measured ({exc})")
            missed.append(Missed(name, refs, str(exc)))
            continue
        measured += [Measured(name, p) for p in pairs]
        echo(f"variant {name}: {sum(p.passed for p in pairs)} of {len(pairs)} pair(s) passed")
    outcome = PendingOutcome(pending, measured, missed)
    if missed:
        raise PairsNotEvaluatedError(not_measured_message(outcome))
    return outcome


def not_measured_message(outcome: PendingOutcome) -> str:
    """Why some pairs are still waiting, and what to run."""
    left = sum(len(m.adapters) for m in outcome.missed)
    why = " | ".join(f"{m.variant}: {m.reason}" for m in outcome.missed)
    return (
        f"measured {len(outcome.measured)} of {len(outcome.pending)} waiting pair(s); "
        f"{left} on {len(outcome.missed)} variant(s) could not be ({why}); the gateway "
        "refuses them until `quantize eval --pending` (or `quantize eval VARIANT REF`) "
        "measures them"
    )
