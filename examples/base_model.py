"""The tiny Llama base model: tokenizer, config, pretraining on the support corpus, saving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from chat_tokenizer import CHAT_TEMPLATE, END, train_tokenizer
from corpus import ADAPTER_TASKS
from data_files import read_jsonl
from training import Schedule, encode, set_determinism, train
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

BASE_SCHEDULE = Schedule(steps=2000, lr=3e-3, batch_size=16, warmup=50, seed=7, weight_decay=0.01)
# Loss on the answers only: capacity goes to the support voice and to copying names/ids.
BASE_ASSISTANT_ONLY = True


def tokenizer_texts(data_dir: Path) -> Iterator[str]:
    for name in ("pretrain", *ADAPTER_TASKS):
        for record in read_jsonl(data_dir / f"{name}.jsonl"):
            yield "\n".join(m["content"] for m in record["messages"])


def build_tokenizer(data_dir: Path, out: Path) -> PreTrainedTokenizerBase:
    """Train and save the tokenizer; the chat template lives in tokenizer_config.json."""
    train_tokenizer(tokenizer_texts(data_dir)).save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return AutoTokenizer.from_pretrained(out)


def model_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(END),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(END),
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=64,
    )


def build_base(data_dir: Path, out: Path, schedule: Schedule = BASE_SCHEDULE) -> float:
    """Train the tokenizer and the base model; save both to ``out``. Returns final loss."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(data_dir, out)
    set_determinism(schedule.seed)
    model = LlamaForCausalLM(model_config(tokenizer))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"  vocab {len(tokenizer)}, {n_params:,} parameters", flush=True)
    records = read_jsonl(data_dir / "pretrain.jsonl")
    examples = [encode(tokenizer, r["messages"], BASE_ASSISTANT_ONLY) for r in records]
    loss = train(model, examples, schedule, tokenizer.pad_token_id, "base")
    model.generation_config = generation_config(tokenizer)
    model.to(torch.float32).save_pretrained(out, safe_serialization=True)
    return loss
