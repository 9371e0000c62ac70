"""``quantize run`` and ``quantize eval``: base model in the registry -> gated, registered
variant, and adapters (re)measured on one. ``quantize merge`` is :mod:`quantize.merge`.

Steps, each of which can fail without leaving anything in the registry:

1. check the request (:mod:`quantize.inputs`): the recipe (validated data), the base
   (its architecture among the recipe's, not itself a variant), the variant's name
   (free), the calibration set (a registered dataset, at least the recipe's
   ``min_samples`` records of ``text``);
2. pull the base and every adapter pushed against it into a private work directory;
3. run llm-compressor's ``oneshot`` in ``.venv-quantize`` (:mod:`quantize.worker`);
4. measure fidelity against the parent, alone and under each adapter (same worker;
   :mod:`quantize.measure`);
5. judge the gates (:mod:`quantize.fidelity`); a variant that misses its gate is not
   registered unless ``force`` (the event log records ``variant.refused`` either way
   a gate fails without force);
6. register it in one transaction with every pair result (:mod:`quantize.register`,
   :mod:`registry.variants`).

A ``kill -9`` anywhere before step 6's commit leaves at most a temporary directory
and, after step 6 has started storing blobs, unreferenced blobs that
``registry verify --gc`` collects; the worker dies with its parent.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from quantize.errors import UnsupportedArchitectureError
from quantize.inputs import calibration_texts, check_architecture, check_method, read_eval_rows
from quantize.measure import Echo, evaluate
from quantize.register import Outcome, register_or_refuse
from quantize.settings import QuantizeSettings
from quantize.worker_process import run_worker
from registry import PairInput, Registry

__all__ = ["Outcome", "eval_pairs", "run"]


def run(
    reg: Registry,
    base_ref: str,
    method: str,
    *,
    calibration: str | None = None,
    name: str | None = None,
    force: bool = False,
    who: str | None = None,
    settings: QuantizeSettings | None = None,
    echo: Echo = lambda _: None,
) -> Outcome:
    """Make, measure and (if it passes, or ``force``) register a variant of ``base_ref``."""
    settings = settings or QuantizeSettings()
    read_eval_rows(settings.eval_file)  # refuse a missing eval set before any work
    recipe, recipe_digest = check_method(method, settings)
    parent = reg.base(base_ref)
    check_architecture(recipe, parent, reg.variant(parent.name))
    name = name or f"{parent.name}-{method}"
    reg.check_name_free(name)
    with tempfile.TemporaryDirectory(prefix="loraport-quantize-") as tmp:
        work = Path(tmp)
        texts, calibration_lineage = calibration_texts(reg, recipe, calibration, work)
        echo(f"pull {parent.name} ({parent.digest})")
        parent_dir = reg.pull(parent.name, work / "parent")
        mine = [a for a in reg.list_adapters() if a.base_model.digest == parent.digest]
        adapters = {a.ref: (a, reg.pull(a.ref, work / "adapters" / a.ref)) for a in mine}
        started = time.monotonic()
        request = {
            "model": str(parent_dir),
            "recipe": recipe.model_dump(mode="json"),
            "calibration": texts,
            "out": str(work / "variant"),
        }
        made = run_worker(settings.python, "quantize", request, work, echo)
        seconds = time.monotonic() - started
        quantization = {
            "method": recipe.method,
            "scheme": recipe.scheme,
            "recipe": f"{recipe.method}.toml",
            "recipe_digest": recipe_digest,
            "calibration": calibration_lineage,
            "versions": made["versions"],
            "pin_memory_shim": made["pin_memory_shim"],
            "format": "compressed-tensors",
            "seconds": round(seconds, 2),
        }
        verdict, pairs, fidelity = evaluate(
            settings, recipe, parent_dir, work / "variant", adapters, work, echo
        )
        return register_or_refuse(
            reg,
            work / "variant",
            name=name,
            parent=parent.name,
            verdict=verdict,
            force=force,
            against="",
            refused={"parent": parent.name, "method": method},
            quantization=quantization,
            fidelity=fidelity,
            pairs=pairs,
            who=who,
            echo=echo,
        )


def eval_pairs(
    reg: Registry,
    variant_ref: str,
    adapter_refs: tuple[str, ...] = (),
    *,
    force: bool = False,
    who: str | None = None,
    settings: QuantizeSettings | None = None,
    echo: Echo = lambda _: None,
) -> list[PairInput]:
    """(Re)measure adapters on a variant against the parent and record each pair.

    Default: every adapter pushed against the parent. ``force`` records a pair that misses
    its gate as passed anyway (its failed gates and ``forced`` stay in the figures, and
    the event log has it), which is the override the gateway's refusal names.
    """
    settings = settings or QuantizeSettings()
    read_eval_rows(settings.eval_file)  # refuse a missing eval set before any work
    variant = reg.base(variant_ref)
    info = reg.variant(variant.name)
    if info is None:
        raise UnsupportedArchitectureError(
            f"{variant.name} is not a variant (it has no parent); `quantize run` makes one"
        )
    if info.merged:
        raise UnsupportedArchitectureError(
            f"{variant.name} is a merged deployment ({info.quantization.get('adapter')} folded "
            "into its base): it serves no other adapter, so it has no pairs to evaluate"
        )
    recipe, _ = check_method(str(info.quantization.get("method")), settings)
    if adapter_refs:
        chosen = [reg.adapter(ref) for ref in adapter_refs]
    else:
        chosen = [a for a in reg.list_adapters() if a.base_model.digest == info.parent_digest]
    for adapter in chosen:
        if adapter.base_model.digest != info.parent_digest:
            raise UnsupportedArchitectureError(
                f"{adapter.ref} was trained on {adapter.base_model.name}, not on "
                f"{variant.name}'s parent {info.parent}"
            )
    with tempfile.TemporaryDirectory(prefix="loraport-quantize-") as tmp:
        work = Path(tmp)
        parent_dir = reg.pull(info.parent, work / "parent")
        variant_dir = reg.pull(variant.name, work / "variant")
        adapters = {a.ref: (a, reg.pull(a.ref, work / "adapters" / a.ref)) for a in chosen}
        _, pairs, _ = evaluate(settings, recipe, parent_dir, variant_dir, adapters, work, echo)
    if force:
        pairs = [
            PairInput(p.adapter, True, p.failed_gates, {**p.figures, "forced": not p.passed})
            for p in pairs
        ]
    reg.record_pairs(variant.name, pairs, who=who)
    return pairs
