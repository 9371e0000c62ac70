"""Evaluate the committed zoo with transformers + peft greedy decoding.

For every held-out prompt in ``data/eval.jsonl`` (chat template, generation prompt):

- each adapter: the fraction of prompts whose greedy output differs from the base's,
  and the fraction that equals the task's reference answer;
- extract: the fraction whose unconstrained output parses as JSON and validates
  against ``adapters/extract/schema.json`` (and the fraction with all four fields right);
- triage: accuracy against the reference label.

Usage: python examples/evaluate.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jsonschema
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

EXAMPLES = Path(__file__).resolve().parent
BASE_DIR = EXAMPLES / "models" / "tiny-llama"
ADAPTERS_DIR = EXAMPLES / "adapters"
EVAL_FILE = EXAMPLES / "data" / "eval.jsonl"
ADAPTERS: tuple[str, ...] = ("support-v1", "support-v2", "extract", "triage")
MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class Zoo:
    """The base model with every adapter loaded into one PeftModel."""

    tokenizer: PreTrainedTokenizerBase
    model: PeftModel


@dataclass(frozen=True)
class AdapterFigures:
    differs_from_base: float
    matches_reference: float
    schema_valid: float | None = None
    fields_exact: float | None = None
    label_accuracy: float | None = None


def load_eval(path: Path = EVAL_FILE) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def load_schema(adapters_dir: Path = ADAPTERS_DIR) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((adapters_dir / "extract" / "schema.json").read_text())
    return schema


def load_zoo(
    base_dir: Path = BASE_DIR, adapters_dir: Path = ADAPTERS_DIR, adapters: Sequence[str] = ADAPTERS
) -> Zoo:
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapters_dir / adapters[0], adapter_name=adapters[0])
    for name in adapters[1:]:
        model.load_adapter(adapters_dir / name, adapter_name=name)
    model.eval()
    return Zoo(tokenizer, model)


@torch.inference_mode()
def greedy(
    zoo: Zoo,
    prompts: Sequence[Sequence[dict[str, str]]],
    adapter: str | None,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """Greedy completions of chat ``prompts`` with ``adapter`` (None: the base model)."""
    tok = zoo.tokenizer
    texts = [
        tok.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    batch = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    kwargs = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if adapter is None:
        with zoo.model.disable_adapter():
            out = zoo.model.generate(**batch, **kwargs)
    else:
        zoo.model.set_adapter(adapter)
        out = zoo.model.generate(**batch, **kwargs)
    new = out[:, batch["input_ids"].shape[1] :]
    return [tok.decode(row, skip_special_tokens=True) for row in new]


def schema_valid(text: str, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


def fraction(flags: Sequence[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def adapter_figures(
    task: str,
    outputs: Sequence[str],
    base: Sequence[str],
    records: Sequence[dict[str, Any]],
    schema: dict[str, Any],
) -> AdapterFigures:
    refs = [r["reference"][task] for r in records]
    extra: dict[str, float] = {}
    if task == "extract":
        extra["schema_valid"] = fraction([schema_valid(o, schema) for o in outputs])
        extra["fields_exact"] = fraction(
            [
                schema_valid(o, schema) and json.loads(o) == r["fields"]
                for o, r in zip(outputs, records, strict=True)
            ]
        )
    if task == "triage":
        extra["label_accuracy"] = fraction(
            [o.strip() == r["label"] for o, r in zip(outputs, records, strict=True)]
        )
    return AdapterFigures(
        differs_from_base=fraction([o != b for o, b in zip(outputs, base, strict=True)]),
        matches_reference=fraction([o == r for o, r in zip(outputs, refs, strict=True)]),
        **extra,
    )


def run_eval(
    zoo: Zoo, records: Sequence[dict[str, Any]], schema: dict[str, Any]
) -> tuple[dict[str, list[str]], dict[str, AdapterFigures]]:
    """Greedy outputs per model ("base" and each adapter) and each adapter's figures."""
    prompts = [r["messages"] for r in records]
    outputs = {"base": greedy(zoo, prompts, None)}
    for task in ADAPTERS:
        outputs[task] = greedy(zoo, prompts, task)
    figures = {
        t: adapter_figures(t, outputs[t], outputs["base"], records, schema) for t in ADAPTERS
    }
    base_ref = fraction(
        [o == r["reference"]["base"] for o, r in zip(outputs["base"], records, strict=True)]
    )
    figures["base"] = AdapterFigures(differs_from_base=0.0, matches_reference=base_ref)
    return outputs, figures


def table(figures: dict[str, AdapterFigures]) -> str:
    cols = [
        "differs_from_base",
        "matches_reference",
        "schema_valid",
        "fields_exact",
        "label_accuracy",
    ]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, f in figures.items():
        cells = [getattr(f, c) for c in cols]
        lines.append(
            f"| {name} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write figures and outputs here")
    args = parser.parse_args(argv)
    records = load_eval()
    outputs, figures = run_eval(load_zoo(), records, load_schema())
    print(f"{len(records)} held-out prompts, greedy, max_new_tokens={MAX_NEW_TOKENS}")
    print(table(figures))
    result = {"figures": {k: asdict(v) for k, v in figures.items()}, "outputs": outputs}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
