"""``registry push``'s after-push hook (entry point ``loraport.after_push``).

A version pushed against a base that has quantized variants is measured on each of them
at once, the same way ``quantize eval VARIANT ADAPTER`` does, so the gateway can serve it
there as soon as its pair passes. Merged deployments are skipped: they hold one adapter
already folded in and take no others.
"""

from __future__ import annotations

from quantize.errors import PairsNotEvaluatedError, QuantizeError
from quantize.progress import Relay
from quantize.stage import eval_pairs
from registry import AdapterVersion, Registry, RegistryError
from registry.hooks import Echo
from registry.pending import pending_for


def unevaluated_variants(reg: Registry, adapter: AdapterVersion) -> list[str]:
    """The variants of ``adapter``'s base that adapters run on (not merged deployments)
    and that have no recorded pair for this version yet (:mod:`registry.pending`)."""
    return [p.variant for p in pending_for(reg, adapter)]


def evaluate_on_variants(reg: Registry, adapter: AdapterVersion, echo: Echo) -> None:
    """Measure ``adapter`` on every quantized variant of its base that has no result for
    it yet, and record each pair. Idempotent: pushing the same version again evaluates
    only what a failed or skipped run left."""
    variants = unevaluated_variants(reg, adapter)
    missed: list[tuple[str, Exception]] = []
    for variant in variants:
        echo(f"evaluating {adapter.ref} on variant {variant} (quantize eval)")
        relay = Relay(echo)
        try:
            (pair,) = eval_pairs(reg, variant, (adapter.ref,), echo=relay)
        except (QuantizeError, RegistryError) as exc:
            missed.append((variant, exc))
            continue
        finally:
            relay.close()
        verdict = "passed" if pair.passed else "FAILED " + ", ".join(pair.failed_gates)
        echo(f"{adapter.ref} on {variant}: {verdict}")
    if missed:
        why = " | ".join(f"{name}: {exc}" for name, exc in missed)
        commands = "; ".join(f"`quantize eval {name} {adapter.ref}`" for name, _ in missed)
        raise PairsNotEvaluatedError(
            f"{adapter.ref} was not evaluated on {len(missed)} variant(s) ({why}); "
            f"the gateway refuses it there until you run {commands}"
        )
