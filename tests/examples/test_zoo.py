"""Checks on the committed demo zoo (examples/): never rebuilds it, only loads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from evaluate import (
    ADAPTERS,
    ADAPTERS_DIR,
    BASE_DIR,
    EXAMPLES,
    AdapterFigures,
    load_eval,
    load_schema,
    load_zoo,
    run_eval,
)
from safetensors import safe_open

EXPECTED_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return load_eval()


@pytest.fixture(scope="module")
def evaluation(
    records: list[dict[str, Any]],
) -> tuple[dict[str, list[str]], dict[str, AdapterFigures]]:
    return run_eval(load_zoo(), records, load_schema())


def test_base_config_is_as_documented() -> None:
    config = json.loads((BASE_DIR / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == 4
    assert config["hidden_size"] == 128
    assert config["num_attention_heads"] == 2
    assert config["num_key_value_heads"] == 2
    assert config["head_dim"] == 64
    assert config["max_position_embeddings"] == 512
    assert 900 <= config["vocab_size"] <= 1100


def test_generation_stops_at_end_of_turn() -> None:
    gen = json.loads((BASE_DIR / "generation_config.json").read_text())
    tok = json.loads((BASE_DIR / "tokenizer.json").read_text())
    end_id = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|end|>")
    assert gen["eos_token_id"] == end_id
    tok_config = json.loads((BASE_DIR / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "<|end|>"
    assert "add_generation_prompt" in tok_config["chat_template"]


def test_weights_are_safetensors_only() -> None:
    weights = [p for p in EXAMPLES.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
    assert weights, "no weight files found"
    assert all(p.suffix == ".safetensors" for p in weights), weights
    with safe_open(BASE_DIR / "model.safetensors", framework="pt") as f:
        assert all(f.get_slice(k).get_dtype() == "F32" for k in f.keys())  # noqa: SIM118


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_config(name: str) -> None:
    adapter = ADAPTERS_DIR / name
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["r"] == 8
    assert config["lora_alpha"] == 16
    assert set(config["target_modules"]) == EXPECTED_TARGETS
    assert config["base_model_name_or_path"] == "tiny-llama"
    assert (adapter / "adapter_model.safetensors").is_file()
    args = json.loads((adapter / "training_args.json").read_text())
    data = EXAMPLES.parent / args["data_file"]
    assert data.is_file()


def test_extract_schema_is_a_valid_closed_object() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert set(schema["required"]) == {"name", "order_id", "item", "issue"}
    assert schema["additionalProperties"] is False


def test_eval_set_is_held_out(records: list[dict[str, Any]]) -> None:
    seen = set()
    for name in ("pretrain", *ADAPTERS):
        for line in (EXAMPLES / "data" / f"{name}.jsonl").read_text().splitlines():
            seen.add(json.loads(line)["messages"][0]["content"])
    assert 40 <= len(records) <= 60
    assert not any(r["messages"][0]["content"] in seen for r in records)


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_changes_greedy_output(
    name: str, evaluation: tuple[dict[str, list[str]], dict[str, AdapterFigures]]
) -> None:
    _, figures = evaluation
    assert figures[name].differs_from_base >= 0.9


def test_extract_output_validates_against_schema(
    evaluation: tuple[dict[str, list[str]], dict[str, AdapterFigures]],
) -> None:
    _, figures = evaluation
    assert (figures["extract"].schema_valid or 0.0) >= 0.8
    # and reads the right values: name, order id, item and issue all equal the reference
    assert (figures["extract"].fields_exact or 0.0) >= 0.9


def test_triage_answers_with_a_known_label(
    records: list[dict[str, Any]],
    evaluation: tuple[dict[str, list[str]], dict[str, AdapterFigures]],
) -> None:
    outputs, _ = evaluation
    labels = {r["label"] for r in records}
    assert sum(o.strip() in labels for o in outputs["triage"]) >= 0.9 * len(records)


def test_committed_results_match_a_fresh_evaluation(
    evaluation: tuple[dict[str, list[str]], dict[str, AdapterFigures]],
) -> None:
    """The recorded outputs are what this zoo produces (float rounding may flip a few)."""
    outputs, _ = evaluation
    committed = json.loads((EXAMPLES / "eval_results.json").read_text())["outputs"]
    pairs = [
        (a, b) for name in outputs for a, b in zip(outputs[name], committed[name], strict=True)
    ]
    assert sum(a == b for a, b in pairs) >= 0.95 * len(pairs)


def test_zoo_stays_small() -> None:
    size = sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file())
    assert size < 12 * 2**20, size


def test_stages_are_importable_without_side_effects() -> None:
    import build  # the import must not build anything

    assert Path(build.__file__).parent == EXAMPLES
