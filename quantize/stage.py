"""``quantize run``: base model in the registry -> gated, registered variant.

Steps, each of which can fail without leaving anything in the registry:

1. check the request: the recipe (validated data), the base (its architecture among the
   recipe's, not itself a variant), the variant's name (free), the calibration set
   (present, at least the recipe's ``min_samples`` records of ``text``);
2. pull the base and every adapter pushed against it into a private work directory;
3. run llm-compressor's ``oneshot`` in ``.venv-quantize`` (:mod:`quantize.worker`);
4. measure fidelity against the parent, alone and under each adapter (same worker);
5. judge the gates (:mod:`quantize.fidelity`); a variant that misses its gate is not
   registered unless ``force`` (the event log records ``variant.refused`` either way
   a gate fails without force);
6. register it in one transaction with every pair result (:mod:`registry.variants`).

A ``kill -9`` anywhere before step 6's commit leaves at most a temporary directory
and, after step 6 has started storing blobs, unreferenced blobs that
``registry verify --gc`` collects; the worker dies with its parent.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantize.errors import CalibrationError, GateFailedError, UnsupportedArchitectureError
from quantize.fidelity import Verdict, judge
from quantize.recipes import METHODS, Gate, Recipe, RecipeError, load_recipe
from quantize.settings import QuantizeSettings
from quantize.worker_process import run_worker
from registry import AdapterVersion, BaseModel, PairInput, Registry, VariantInfo

Echo = Callable[[str], None]
#: Adapters whose name is a task of the eval set get a task score.
TASKS = ("extract", "triage")


@dataclass(frozen=True, slots=True)
class Outcome:
    variant: BaseModel | None
    verdict: Verdict
    pairs: list[PairInput]
    quantization: dict[str, Any]
    fidelity: dict[str, Any]


def _file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _weights_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def check_architecture(recipe: Recipe, base: BaseModel, variant: VariantInfo | None) -> None:
    if variant is not None and variant.merged:
        adapter = variant.quantization.get("adapter", "ADAPTER")
        raise UnsupportedArchitectureError(
            f"{base.name} is a merged deployment of {adapter}; to quantize it, run `quantize "
            f"merge {adapter} --method {recipe.method}` (measured against adapter mode)"
        )
    if variant is not None or "quantization_config" in base.architecture:
        raise UnsupportedArchitectureError(
            f"{base.name} is already quantized; quantize its parent "
            f"({variant.parent if variant else 'the unquantized model'}) instead"
        )
    found = base.architecture.get("architectures") or []
    if not any(a in recipe.architectures for a in found):
        raise UnsupportedArchitectureError(
            f"{base.name} is {', '.join(found) or 'of no declared architecture'}; the "
            f"{recipe.method} recipe handles {', '.join(recipe.architectures)}"
        )


def calibration_texts(
    reg: Registry, recipe: Recipe, ref: str | None, work: Path
) -> tuple[list[str], dict[str, Any] | None]:
    """The calibration texts the recipe needs, and their lineage (None when it needs none)."""
    spec = recipe.calibration
    if spec is None:
        return [], None
    if ref is None:
        raise CalibrationError(
            f"{recipe.method} needs calibration data: pass --calibration DATASET_REF "
            f"(a registered JSON-lines dataset of at least {spec.min_samples} "
            '{"text": ...} records, e.g. examples/data/calibration.jsonl)'
        )
    dataset = reg.dataset(ref)
    path = reg.pull(ref, work / "calibration")
    file = path if path.is_file() else next(p for p in path.iterdir() if p.is_file())
    texts: list[str] = []
    for n, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise CalibrationError(f"{ref}: line {n + 1} is not JSON") from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise CalibrationError(f'{ref}: line {n + 1} has no non-empty "text" field')
        texts.append(text)
    if len(texts) < spec.min_samples:
        raise CalibrationError(
            f"{ref} has {len(texts)} calibration records; the {recipe.method} recipe needs "
            f"at least {spec.min_samples}"
        )
    texts = texts[: spec.max_samples]
    return texts, {"dataset": dataset.name, "digest": dataset.digest, "samples": len(texts)}


def read_eval_rows(path: Path) -> list[dict[str, Any]]:
    """The eval set: one OpenAI ``messages`` record (with references) per JSON line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _jobs(
    eval_rows: list[dict[str, Any]], adapters: dict[str, tuple[AdapterVersion, Path]]
) -> list[dict[str, Any]]:
    prompts = [row["messages"] for row in eval_rows]
    refs = [row.get("reference", {}) for row in eval_rows]
    heldout = sorted({text for r in refs for key, text in r.items() if key != "base"})
    jobs = [
        {
            "key": "base",
            "adapter": None,
            "prompts": prompts,
            "answers": [r.get("base") for r in refs],
            "texts": heldout,
        }
    ]
    for ref, (adapter, path) in adapters.items():
        answers = [r.get(adapter.name) for r in refs]
        jobs.append(
            {"key": ref, "adapter": str(path), "prompts": prompts, "answers": answers, "texts": []}
        )
    return jobs


def evaluate(
    settings: QuantizeSettings,
    recipe: Recipe,
    reference: Path,
    candidate: Path,
    adapters: dict[str, tuple[AdapterVersion, Path]],
    work: Path,
    echo: Echo,
) -> tuple[Verdict, list[PairInput], dict[str, Any]]:
    """Gate the candidate against the reference, alone and under each adapter."""
    eval_rows = read_eval_rows(settings.eval_file)
    request = {
        "reference": str(reference),
        "candidate": str(candidate),
        "max_new_tokens": settings.max_new_tokens,
        "jobs": _jobs(eval_rows, adapters),
    }
    raw = run_worker(settings.python, "eval", request, work, echo)["results"]
    base = judge(raw["base"], recipe.gate)
    pairs = []
    for ref, (adapter, _) in adapters.items():
        task = adapter.name if adapter.name in TASKS else None
        verdict = judge(
            raw[ref], recipe.gate, task=task, eval_rows=eval_rows, schema=adapter.schema
        )
        pairs.append(PairInput(ref, verdict.passed, verdict.failed, verdict.figures))
    size = {"parent": _weights_bytes(reference), "variant": _weights_bytes(candidate)}
    fidelity = {
        "eval_set": {"file": settings.eval_file.name, "digest": _file_digest(settings.eval_file)},
        "base": base.figures,
        "weights_bytes": size,
        "size_ratio": round(size["variant"] / size["parent"], 4) if size["parent"] else None,
        "gate": recipe.gate.model_dump(),
        "failed_gates": list(base.failed),
        "pairs_failed": [p.adapter for p in pairs if not p.passed],
    }
    return base, pairs, fidelity


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
    if method not in METHODS:
        raise RecipeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    recipe, recipe_digest = load_recipe(method, settings.recipe_file(method))
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
        if not verdict.passed and not force:
            detail = {"parent": parent.name, "method": method, "failed_gates": verdict.failed}
            reg.log_variant_refused(name, detail, who=who)
            raise GateFailedError(
                f"{name} missed its fidelity gate ({', '.join(verdict.failed)}: "
                f"{_gate_text(verdict, recipe)}); nothing was registered. Pass --force to "
                "register it anyway (recorded as forced)"
            )
        echo(f"register {name}")
        variant = reg.add_variant(
            work / "variant",
            name=name,
            parent=parent.name,
            quantization=quantization,
            fidelity=fidelity,
            passed=verdict.passed,
            forced=not verdict.passed,
            pairs=pairs,
            who=who,
        )
    return Outcome(variant, verdict, pairs, quantization, fidelity)


def _gate_text(verdict: Verdict, recipe: Recipe) -> str:
    f = verdict.figures
    worst = max((r for r in f["perplexity_ratio"].values() if r is not None), default=1.0)
    return (
        f"perplexity ratio {worst:.4f} (max {recipe.gate.max_perplexity_ratio}), "
        f"token agreement {f['token_agreement']:.4f} (min {recipe.gate.min_token_agreement})"
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
    method = str(info.quantization.get("method"))
    recipe, _ = load_recipe(method, settings.recipe_file(method))
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
        if method not in METHODS:
            raise RecipeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        recipe, recipe_digest = load_recipe(method, settings.recipe_file(method))
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
        eval_rows = read_eval_rows(settings.eval_file)
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
        task = adapter.name if adapter.name in TASKS else None
        verdict = judge(raw, gate, task=task, eval_rows=eval_rows, schema=adapter.schema)
        size = {"adapter_mode": _weights_bytes(parent_dir), "merged": _weights_bytes(final)}
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
            "eval_set": {
                "file": settings.eval_file.name,
                "digest": _file_digest(settings.eval_file),
            },
            "merged": verdict.figures,
            "weights_bytes": size,
            "size_ratio": round(size["merged"] / size["adapter_mode"], 4),
            "gate": gate.model_dump(),
            "failed_gates": list(verdict.failed),
        }
        if not verdict.passed and not force:
            detail = {
                "adapter": adapter.ref,
                "method": lineage["method"],
                "failed_gates": verdict.failed,
            }
            reg.log_variant_refused(name, detail, who=who)
            raise GateFailedError(
                f"{name} missed its fidelity gate against adapter mode "
                f"({', '.join(verdict.failed)}); nothing was registered. Pass --force to "
                "register it anyway (recorded as forced)"
            )
        echo(f"register {name}")
        variant = reg.add_variant(
            final,
            name=name,
            parent=parent.name,
            quantization=lineage,
            fidelity=fidelity,
            passed=verdict.passed,
            forced=not verdict.passed,
            pairs=[],
            who=who,
        )
    return Outcome(variant, verdict, [], lineage, fidelity)
