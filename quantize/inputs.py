"""What a quantize stage checks and reads before it makes anything: the method and its
recipe, the base's architecture, the calibration set and the eval set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantize.errors import CalibrationError, EvalSetError, UnsupportedArchitectureError
from quantize.recipes import METHODS, Recipe, RecipeError, load_recipe
from quantize.settings import QuantizeSettings
from registry import BaseModel, Registry, VariantInfo

#: Suffixes of the files a calibration set comes in (a name never needs one).
_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")


def check_method(method: str, settings: QuantizeSettings) -> tuple[Recipe, str]:
    """The recipe of ``method`` and its digest; RecipeError for an unknown method."""
    if method not in METHODS:
        raise RecipeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return load_recipe(method, settings.recipe_file(method))


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


def _looks_like_a_file(ref: str) -> bool:
    """A path where a dataset name belongs: a separator, a leading dot, a file suffix."""
    return "/" in ref or "\\" in ref or ref.startswith(".") or ref.lower().endswith(_FILE_SUFFIXES)


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
    if _looks_like_a_file(ref):
        raise CalibrationError(
            f"--calibration takes a registered dataset's name, and {ref!r} looks like a "
            f"file: register it first with `registry dataset add {ref} --name NAME`, then "
            "pass --calibration NAME (the variant's lineage records the dataset's digest)"
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


def read_eval_rows(path: Path | None) -> list[dict[str, Any]]:
    """The eval set: one OpenAI ``messages`` record (with references) per JSON line."""
    if path is None:
        raise EvalSetError(
            "no eval set: pass --eval-set FILE (or set QUANTIZE_EVAL_FILE), a JSON-lines "
            'file of {"messages": [...], "reference": {"base": ..., ADAPTER: ...}} records '
            "(the demo's is examples/data/eval.jsonl)"
        )
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalSetError(f"cannot read the eval set {path}: {exc}") from None
    if not rows or not all(isinstance(r, dict) and r.get("messages") for r in rows):
        raise EvalSetError(f"the eval set {path} has no records, or one without messages")
    return rows
