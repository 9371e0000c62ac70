"""Synthetic Llama-shaped base models and PEFT LoRA adapters of any shape: tiny ones that
build in milliseconds for the registry's tests, big ones for its benchmark."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


@dataclass(frozen=True)
class Shape:
    hidden: int = 32
    layers: int = 2
    intermediate: int = 64
    vocab: int = 64
    heads: int = 2

    def linear(self) -> dict[str, tuple[int, int]]:
        """Each projection of a layer: (out features, in features)."""
        h, i = self.hidden, self.intermediate
        return {
            "self_attn.q_proj": (h, h),
            "self_attn.k_proj": (h, h),
            "self_attn.v_proj": (h, h),
            "self_attn.o_proj": (h, h),
            "mlp.gate_proj": (i, h),
            "mlp.up_proj": (i, h),
            "mlp.down_proj": (h, i),
        }


TINY = Shape()


def write_base(
    path: Path, shape: Shape = TINY, template: str = CHAT_TEMPLATE, *, random: bool = False
) -> Path:
    """A LlamaForCausalLM directory: config, tokenizer files, safetensors weights (zeros,
    or seeded random numbers with `random`)."""
    path.mkdir(parents=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.heads,
        "intermediate_size": shape.intermediate,
        "vocab_size": shape.vocab,
        "tie_word_embeddings": False,
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    (path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    (path / "README.md").write_text("not part of the digest\n")
    rng = np.random.default_rng(0)

    def weight(*dims: int) -> np.ndarray:
        return rng.standard_normal(dims, np.float32) if random else np.zeros(dims, np.float32)

    tensors = {
        "model.embed_tokens.weight": weight(shape.vocab, shape.hidden),
        "lm_head.weight": weight(shape.vocab, shape.hidden),
        "model.norm.weight": np.ones(shape.hidden, np.float32),
    }
    for layer in range(shape.layers):
        for module, dims in shape.linear().items():
            tensors[f"model.layers.{layer}.{module}.weight"] = weight(*dims)
    save_file(tensors, str(path / "model.safetensors"))
    return path


def write_adapter(
    path: Path,
    shape: Shape = TINY,
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
    for layer in range(shape.layers):
        for module, (out_f, in_f) in shape.linear().items():
            if module.rsplit(".", 1)[-1] not in targets:
                continue
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((r, in_f), np.float32)
            # Trained B starts at zero and moves a little: 0.01 keeps the update ~1% of a
            # random base layer, like a real adapter (registry.adapter_bounds).
            b = rng.standard_normal((out_f, r), np.float32) * np.float32(0.01)
            tensors[f"{prefix}.lora_B.weight"] = b
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path
