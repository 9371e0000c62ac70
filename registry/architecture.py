"""What a base model is made of, read from files and never by loading a model.

The summary comes from ``config.json`` plus the headers of its ``*.safetensors``
files (8-byte little-endian length + JSON). It lists every 2-D weight as a module
name with its ``[out_features, in_features]`` shape: exactly what a LoRA may target.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.digest import Digest, canonical_json, sha256_bytes
from registry.dirscan import ScannedFile

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
MAX_HEADER_BYTES = 100 * 2**20
CONFIG_KEYS = (
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "tie_word_embeddings",
    "torch_dtype",
    "dtype",
)
#: Files of a base model that define its behaviour (and therefore its digest).
_CANONICAL = re.compile(
    r"(config\.json|generation_config\.json|.+\.safetensors|model\.safetensors\.index\.json"
    r"|tokenizer\.json|tokenizer_config\.json|tokenizer\.model|special_tokens_map\.json"
    r"|added_tokens\.json|vocab\.json|vocab\.txt|merges\.txt|chat_template\.jinja"
    r"|chat_template\.json)"
)


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """dtype and shape of one tensor, from a safetensors header."""

    dtype: str
    shape: tuple[int, ...]
    #: Absolute byte offsets of the tensor's data in its file: [start, end).
    start: int = 0
    end: int = 0


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes and shapes; raise ValueError if the file is not safetensors."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path.name} is too short to be safetensors")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(f"{path.name} has an impossible safetensors header length")
        raw = fh.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} has an unreadable safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} has a malformed safetensors header")
    tensors: dict[str, TensorInfo] = {}
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = isinstance(dtype, str) and all(isinstance(d, int) and d >= 0 for d in shape)
            ok = ok and 0 <= start <= end <= data_size
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{path.name}: tensor {name!r} has a malformed header entry")
        tensors[name] = TensorInfo(dtype, tuple(shape), 8 + length + start, 8 + length + end)
    return tensors


def is_canonical_base_file(relpath: str) -> bool:
    """True for the top-level files that define a base model (config, weights, tokenizer)."""
    return "/" not in relpath and _CANONICAL.fullmatch(relpath) is not None


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def chat_template(files: dict[str, Path]) -> str | list[Any] | None:
    """The chat template a directory carries, if any (jinja file wins over configs)."""
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"].read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if name in files:
            data = _load_json(files[name])
            template = data.get("chat_template") if isinstance(data, dict) else None
            if isinstance(template, str | list):
                return template
    return None


def template_digest(template: str | list[Any] | None) -> str | None:
    """``sha256:<hex>`` of a chat template (text as UTF-8; named templates as canonical JSON)."""
    if template is None:
        return None
    data = template.encode() if isinstance(template, str) else canonical_json(template)
    return Digest.from_hex(sha256_bytes(data))


def summarize(files: list[ScannedFile]) -> dict[str, Any]:
    """The architecture summary of a base model; raise ValueError on unreadable files."""
    by_name = {f.relpath: f.path for f in files}
    if "config.json" not in by_name:
        raise ValueError("no config.json: is this a Hugging Face model directory?")
    config = _load_json(by_name["config.json"])
    if not isinstance(config, dict):
        raise ValueError("config.json is not a JSON object")
    weights = [f for f in files if f.relpath.endswith(".safetensors") and "/" not in f.relpath]
    if not weights:
        pickled = [f.relpath for f in files if Path(f.relpath).suffix in PICKLE_SUFFIXES]
        hint = f" (found pickled {', '.join(pickled)}; convert to safetensors)" if pickled else ""
        raise ValueError(f"no *.safetensors weights{hint}")
    modules: dict[str, list[int]] = {}
    for weight_file in weights:
        for tensor, info in read_safetensors_header(weight_file.path).items():
            if tensor.endswith(".weight") and len(info.shape) == 2:
                modules[tensor.removesuffix(".weight")] = list(info.shape)
    if config.get("tie_word_embeddings") and "lm_head" not in modules:
        embed = next((m for m in modules if m.endswith("embed_tokens")), None)
        if embed is not None:
            modules["lm_head"] = modules[embed]
    summary = {k: config[k] for k in CONFIG_KEYS if k in config}
    if "quantization_config" in config:
        summary["quantization_config"] = config["quantization_config"]
    summary["modules"] = dict(sorted(modules.items()))
    summary["target_modules"] = sorted({m.rsplit(".", 1)[-1] for m in modules})
    return summary
