"""PEFT LoRA adapters trained on the tiny base, loss on the assistant's tokens only."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import peft
import torch
from corpus import ISSUES
from data_files import read_jsonl, sha256_file
from peft import LoraConfig, get_peft_model
from training import Schedule, encode, set_determinism, train
from transformers import AutoModelForCausalLM, AutoTokenizer

BASE_NAME = "tiny-llama"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTER_SCHEDULES: dict[str, Schedule] = {
    "support-v1": Schedule(steps=100, lr=2e-3, batch_size=16, warmup=10, seed=21),
    "support-v2": Schedule(steps=100, lr=2e-3, batch_size=16, warmup=10, seed=22),
    "extract": Schedule(steps=1000, lr=3e-3, batch_size=16, warmup=10, seed=23),
    "triage": Schedule(steps=60, lr=2e-3, batch_size=16, warmup=10, seed=24),
}


def lora_config() -> LoraConfig:
    return LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=TARGET_MODULES,
        bias="none",
        task_type="CAUSAL_LM",
    )


def fix_adapter_config(out: Path) -> None:
    """Name the base by its zoo name, not by the directory it was loaded from."""
    path = out / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = BASE_NAME
    # PEFT writes a set in hash order, which changes from run to run; the file's bytes
    # (and so its registry digest) must not.
    config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "README.md").unlink(missing_ok=True)


def write_training_args(out: Path, task: str, schedule: Schedule, data: Path, loss: float) -> None:
    args = {
        "task": task,
        "base_model": BASE_NAME,
        "data_file": f"examples/data/{data.name}",
        "data_sha256": sha256_file(data),
        **asdict(schedule),
        "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": TARGET_MODULES},
        "loss_on": "assistant tokens (answer and its <|end|>)",
        "final_loss": round(loss, 4),
        "peft_version": peft.__version__,
        "torch_version": torch.__version__,
    }
    (out / "training_args.json").write_text(json.dumps(args, indent=2) + "\n")


def build_adapter(task: str, base_dir: Path, data_dir: Path, out: Path) -> float:
    """Train one adapter on ``data_dir/<task>.jsonl`` and save it to ``out``."""
    schedule = ADAPTER_SCHEDULES[task]
    data = data_dir / f"{task}.jsonl"
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    set_determinism(schedule.seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(base, lora_config())
    examples = [encode(tokenizer, r["messages"], assistant_only=True) for r in read_jsonl(data)]
    loss = train(model, examples, schedule, tokenizer.pad_token_id, task)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    fix_adapter_config(out)
    write_training_args(out, task, schedule, data, loss)
    return loss


def extract_schema() -> dict[str, object]:
    """The JSON Schema that the extract adapter's answers follow."""
    text = {"type": "string", "minLength": 1, "maxLength": 40}
    return {
        "title": "SupportTicket",
        "description": "Fields the extract adapter reads out of one customer message.",
        "type": "object",
        "properties": {
            "name": text,
            "order_id": text,
            "item": text,
            "issue": {"type": "string", "enum": list(ISSUES)},
        },
        "required": ["name", "order_id", "item", "issue"],
        "additionalProperties": False,
    }


def write_extract_schema(out: Path) -> None:
    (out / "schema.json").write_text(json.dumps(extract_schema(), indent=2) + "\n")
