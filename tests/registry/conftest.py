"""Synthetic base models and PEFT adapters, small enough to build in milliseconds."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

import registry
from registry.local import LocalRegistry
from registry.location import open_local

HIDDEN, LAYERS, INTERMEDIATE, VOCAB = 32, 2, 64, 64
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
LINEAR = {
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (HIDDEN, HIDDEN),
    "self_attn.v_proj": (HIDDEN, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (INTERMEDIATE, HIDDEN),
    "mlp.up_proj": (INTERMEDIATE, HIDDEN),
    "mlp.down_proj": (HIDDEN, INTERMEDIATE),
}


def write_base(path: Path, template: str = CHAT_TEMPLATE) -> Path:
    """A tiny LlamaForCausalLM directory: config, tokenizer files, safetensors weights."""
    path.mkdir(parents=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": INTERMEDIATE,
        "vocab_size": VOCAB,
        "tie_word_embeddings": False,
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    (path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    (path / "README.md").write_text("not part of the digest\n")
    tensors = {
        "model.embed_tokens.weight": np.zeros((VOCAB, HIDDEN), np.float32),
        "lm_head.weight": np.zeros((VOCAB, HIDDEN), np.float32),
        "model.norm.weight": np.ones(HIDDEN, np.float32),
    }
    for layer in range(LAYERS):
        for module, shape in LINEAR.items():
            tensors[f"model.layers.{layer}.{module}.weight"] = np.zeros(shape, np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    return path


def write_adapter(
    path: Path,
    *,
    r: int = 4,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> Path:
    """A PEFT LoRA directory with lora_A [r, in] and lora_B [out, r] per targeted module."""
    path.mkdir(parents=True)
    adapter_config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.05,
        "target_modules": list(targets),
        "base_model_name_or_path": "tiny-base",
        "task_type": "CAUSAL_LM",
        "bias": "none",
        **(config or {}),
    }
    (path / "adapter_config.json").write_text(json.dumps(adapter_config))
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for layer in range(LAYERS):
        for module, (out_f, in_f) in LINEAR.items():
            if module.rsplit(".", 1)[-1] not in targets:
                continue
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((r, in_f), np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((out_f, r), np.float32)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


@pytest.fixture
def settings() -> registry.RegistrySettings:
    return registry.RegistrySettings(user="tester")


@pytest.fixture
def reg_path(tmp_path: Path) -> Path:
    return tmp_path / "reg"


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return write_base(tmp_path / "tiny-base")


@pytest.fixture
def dataset_file(tmp_path: Path) -> Path:
    path = tmp_path / "support-data.jsonl"
    path.write_text('{"prompt": "hi", "completion": "hello"}\n{"prompt": "a", "completion": "b"}\n')
    return path


@pytest.fixture
def make_adapter(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10_000))

    def make(name: str = "support", **kwargs: Any) -> Path:
        return write_adapter(tmp_path / "adapters" / f"{next(counter)}" / name, **kwargs)

    return make


@pytest.fixture
def reg(
    reg_path: Path, settings: registry.RegistrySettings, base_dir: Path, dataset_file: Path
) -> Iterator[LocalRegistry]:
    """An open registry holding base ``tiny-base`` and dataset ``support-data``."""
    with open_local(reg_path, settings=settings) as opened:
        opened.add_base(base_dir, name="tiny-base", license="apache-2.0")
        opened.add_dataset(dataset_file, name="support-data")
        yield opened
