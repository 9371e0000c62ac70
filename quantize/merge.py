"""``quantize merge``: an adapter folded into its base (optionally quantized after), a
single-tenant deployment measured against adapter-mode serving of the same version and
registered as a variant of the base whose lineage names both digests."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from quantize.errors import UnsupportedArchitectureError
from quantize.fidelity import judge
from quantize.inputs import calibration_texts, check_architecture, check_method, read_eval_rows
from quantize.measure import Echo, eval_set_lineage, scored, size_ratio, weights_bytes
from quantize.recipes import Gate
from quantize.register import Outcome, register_or_refuse
from quantize.settings import QuantizeSettings
from quantize.worker_process import run_worker
from registry import Registry

#: Merging is exact up to float32 rounding, so a merged deployment must match adapter
#: mode almost token for token; a quantized merge is held to its recipe's gate instead.
MERGE_GATE = Gate(max_perplexity_ratio=1.01, min_token_agreement=0.995, max_task_score_drop=0.02)


def merge(
    reg: Registry,
    adapter_ref: str,
    *,
    method: str | None = None,
    calibration: str | None = None,
    name: str | None = None,
    force: bool = False,
    who: str | None = None,
    settings: QuantizeSettings | None = None,
    echo: Echo = lambda _: None,
) -> Outcome:
    """Merge ``adapter_ref`` into its base (then quantize it with ``method``, if given),
    measure it against adapter-mode serving of the same version, register it as a variant
    of the base whose lineage names both the base and the adapter digests."""
    settings = settings or QuantizeSettings()
    eval_rows = read_eval_rows(settings.eval_file)  # before any work
    eval_file = settings.eval_file
    assert eval_file is not None
    adapter = reg.adapter(adapter_ref)
    parent = reg.base(str(adapter.base_model.digest))
    of = reg.variant(parent.name)
    if of is not None or "quantization_config" in parent.architecture:
        raise UnsupportedArchitectureError(
            f"{adapter.ref} was pushed against {parent.name}, "
            + (f"a variant of {of.parent}" if of else "a quantized model")
            + "; a merge needs the unquantized base it was trained on (push the adapter "
            "against that base, then merge, optionally with --method)"
        )
    recipe, recipe_digest = (None, None)
    if method is not None:
        recipe, recipe_digest = check_method(method, settings)
        check_architecture(recipe, parent, reg.variant(parent.name))
    name = name or f"{adapter.name}-{adapter.version}-merged" + (f"-{method}" if method else "")
    reg.check_name_free(name)
    gate = recipe.gate if recipe is not None else MERGE_GATE
    with tempfile.TemporaryDirectory(prefix="loraport-quantize-") as tmp:
        work = Path(tmp)
        texts, calibration_lineage = (
            calibration_texts(reg, recipe, calibration, work) if recipe else ([], None)
        )
        parent_dir = reg.pull(parent.name, work / "parent")
        adapter_dir = reg.pull(adapter.ref, work / "adapter")
        request: dict[str, Any] = {
            "model": str(parent_dir),
            "adapter": str(adapter_dir),
            "out": str(work / "merged"),
        }
        made = run_worker(settings.python, "merge", request, work, echo)
        final = work / "merged"
        quantized: dict[str, Any] | None = None
        if recipe is not None:
            request = {
                "model": str(final),
                "recipe": recipe.model_dump(mode="json"),
                "calibration": texts,
                "out": str(work / "variant"),
            }
            done = run_worker(settings.python, "quantize", request, work, echo)
            final = work / "variant"
            quantized = {
                "method": recipe.method,
                "scheme": recipe.scheme,
                "recipe_digest": recipe_digest,
                "calibration": calibration_lineage,
                "pin_memory_shim": done["pin_memory_shim"],
                "seconds": round(done["seconds"], 2),
            }
        job = {
            "key": adapter.ref,
            "reference_adapter": str(adapter_dir),
            "candidate_adapter": None,
            "prompts": [row["messages"] for row in eval_rows],
            "answers": [row.get("reference", {}).get(adapter.name) for row in eval_rows],
            "texts": [],
        }
        request = {
            "reference": str(parent_dir),
            "candidate": str(final),
            "max_new_tokens": settings.max_new_tokens,
            "jobs": [job],
        }
        raw = run_worker(settings.python, "eval", request, work, echo)["results"][adapter.ref]
        task = settings.task_of(adapter.name)
        verdict = judge(
            raw, gate, task=task, eval_rows=eval_rows, schema=adapter.schema, scored=scored(job)
        )
        size = {"adapter_mode": weights_bytes(parent_dir), "merged": weights_bytes(final)}
        lineage = {
            "method": "merge" + (f"+{method}" if method else ""),
            "base": parent.name,
            "base_digest": parent.digest,
            "adapter": adapter.ref,
            "adapter_digest": adapter.digest,
            "then_quantized": quantized,
            "versions": made["versions"],
            "format": "compressed-tensors" if quantized else "safetensors",
        }
        fidelity = {
            "against": f"adapter mode: {adapter.ref} on {parent.name}",
            "eval_set": eval_set_lineage(eval_file),
            "merged": verdict.figures,
            "weights_bytes": size,
            "size_ratio": size_ratio(size["merged"], size["adapter_mode"]),
            "gate": gate.model_dump(),
            "failed_gates": list(verdict.failed),
        }
        return register_or_refuse(
            reg,
            final,
            name=name,
            parent=parent.name,
            verdict=verdict,
            force=force,
            against=" against adapter mode",
            refused={"adapter": adapter.ref, "method": lineage["method"]},
            quantization=lineage,
            fidelity=fidelity,
            pairs=[],
            who=who,
            echo=echo,
        )
