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
from registry import AdapterVersion, Registry, RegistryError, VariantInfo
from registry.hooks import Echo


def unevaluated_variants(reg: Registry, adapter: AdapterVersion) -> list[VariantInfo]:
    """The variants of ``adapter``'s base that adapters run on (not merged deployments)
    and that have no recorded pair for this version yet."""
    parent = reg.base(str(adapter.base_model.digest)).name
    return [
        v for v in reg.variants_of(parent) if not v.merged and reg.pair(adapter, v.name) is None
    ]


def evaluate_on_variants(reg: Registry, adapter: AdapterVersion, echo: Echo) -> None:
    """Measure ``adapter`` on every quantized variant of its base that has no result for
    it yet, and record each pair. Idempotent: pushing the same version again evaluates
    only what a failed or skipped run left."""
    variants = unevaluated_variants(reg, adapter)
    missed: list[tuple[str, Exception]] = []
    for variant in variants:
        echo(f"evaluating {adapter.ref} on variant {variant.name} (quantize eval)")
        relay = Relay(echo)
        try:
            (pair,) = eval_pairs(reg, variant.name, (adapter.ref,), echo=relay)
        except (QuantizeError, RegistryError) as exc:
            missed.append((variant.name, exc))
            continue
        finally:
            relay.close()
        verdict = "passed" if pair.passed else "FAILED " + ", ".join(pair.failed_gates)
        echo(f"{adapter.ref} on {variant.name}: {verdict}")
    if missed:
        why = " | ".join(f"{name}: {exc}" for name, exc in missed)
        commands = "; ".join(f"`quantize eval {name} {adapter.ref}`" for name, _ in missed)
        raise PairsNotEvaluatedError(
            f"{adapter.ref} was not evaluated on {len(missed)} variant(s) ({why}); "
            f"the gateway refuses it there until you run {commands}"
        )
