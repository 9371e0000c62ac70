"""Adapter validation: everything a push checks before it writes a byte.

Reads ``adapter_config.json`` and safetensors headers only; pickled weights are
refused by name and never opened. Each failure is an :class:`InvalidAdapterError`
whose ``reason`` says which rule failed and whose message says what to do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from registry.architecture import (
    PICKLE_SUFFIXES,
    TensorInfo,
    chat_template,
    read_safetensors_header,
    template_digest,
)
from registry.dirscan import ScanError, ScannedFile, scan_directory
from registry.errors import AdapterProblem as P
from registry.errors import InvalidAdapterError
from registry.records import BaseModel, PeftSummary

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_TENSOR = re.compile(
    r"base_model\.model\.(?P<module>.+)\."
    r"(?:(?P<linear>lora_[AB])\.weight|(?P<embedding>lora_embedding_[AB]))"
)


@dataclass(frozen=True, slots=True)
class AdapterDir:
    """A scanned adapter directory whose config is a PEFT LoRA config."""

    root: Path
    files: list[ScannedFile]
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]

    def file(self, relpath: str) -> Path | None:
        return next((f.path for f in self.files if f.relpath == relpath), None)


def inspect_adapter_dir(root: Path, max_file_bytes: int) -> AdapterDir:
    """Scan ``root`` and read its PEFT config and safetensors header (no base needed)."""
    try:
        files = scan_directory(root, max_file_bytes)
    except ScanError as exc:
        raise InvalidAdapterError(exc.problem, f"cannot push {root}: {exc}") from None
    names = {f.relpath: f.path for f in files}
    pickled = sorted(r for r in names if Path(r).suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise InvalidAdapterError(
            P.PICKLED_WEIGHTS,
            f"{root} contains pickled files ({', '.join(pickled)}), which are never loaded; "
            "save the adapter with save_pretrained(..., safe_serialization=True) and "
            "remove the pickles",
        )
    if ADAPTER_CONFIG not in names:
        raise InvalidAdapterError(
            P.NOT_PEFT,
            f"{root} has no {ADAPTER_CONFIG}: push the directory written by PEFT's "
            "save_pretrained()",
        )
    try:
        config = json.loads(names[ADAPTER_CONFIG].read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapterError(P.NOT_PEFT, f"{ADAPTER_CONFIG} is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidAdapterError(P.NOT_PEFT, f"{ADAPTER_CONFIG} is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise InvalidAdapterError(
            P.NOT_LORA,
            f"peft_type is {config.get('peft_type')!r}; only LoRA adapters (peft_type LORA) "
            "can be served",
        )
    if config.get("use_dora"):
        raise InvalidAdapterError(P.UNSUPPORTED, "DoRA adapters cannot be served by vLLM")
    if ADAPTER_WEIGHTS not in names:
        raise InvalidAdapterError(
            P.NO_WEIGHTS, f"{root} has no {ADAPTER_WEIGHTS}; save with safe_serialization=True"
        )
    try:
        tensors = read_safetensors_header(names[ADAPTER_WEIGHTS])
    except ValueError as exc:
        raise InvalidAdapterError(P.BAD_SAFETENSORS, str(exc)) from None
    if not tensors:
        raise InvalidAdapterError(P.NO_WEIGHTS, f"{ADAPTER_WEIGHTS} holds no tensors")
    return AdapterDir(root, files, config, tensors)


def _check_tensors(adapter: AdapterDir, base: BaseModel) -> dict[str, int]:
    """Every tensor fits a base module; return module -> rank."""
    modules: dict[str, list[int]] = base.architecture.get("modules", {})
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for tensor, info in adapter.tensors.items():
        match = _TENSOR.fullmatch(tensor)
        if match is None:
            raise InvalidAdapterError(
                P.TENSOR_MISMATCH,
                f"unexpected tensor {tensor!r}: only lora_A/lora_B weights can be served "
                "(no bias, modules_to_save or DoRA tensors)",
            )
        module = match["module"]
        if module not in modules:
            raise InvalidAdapterError(
                P.TENSOR_MISMATCH,
                f"tensor {tensor!r} targets {module!r}, which base model {base.name} does not "
                "have; was the adapter trained on a different base? pass --base",
            )
        part = "A" if (match["linear"] or match["embedding"]).endswith("A") else "B"
        embedding = match["embedding"] is not None
        out_f, in_f = modules[module]
        if embedding:
            out_f, in_f = in_f, out_f
        shape = info.shape
        if (
            len(shape) != 2
            or (part == "A" and shape[1] != in_f)
            or (part == "B" and shape[0] != out_f)
        ):
            expected = f"[r, {in_f}]" if part == "A" else f"[{out_f}, r]"
            raise InvalidAdapterError(
                P.TENSOR_MISMATCH,
                f"tensor {tensor!r} has shape {list(shape)} but {module} of base "
                f"{base.name} needs {expected}; was it trained on a different base?",
            )
        pairs.setdefault(module, {})[part] = shape
    ranks: dict[str, int] = {}
    for module, parts in pairs.items():
        if set(parts) != {"A", "B"} or parts["A"][0] != parts["B"][1]:
            raise InvalidAdapterError(
                P.TENSOR_MISMATCH, f"{module} needs a matching lora_A/lora_B pair of one rank"
            )
        ranks[module] = parts["A"][0]
    return ranks


def _check_targets(config: dict[str, Any], base: BaseModel, ranks: dict[str, int]) -> list[str]:
    targets = config.get("target_modules")
    modules = list(base.architecture.get("modules", {}))
    if isinstance(targets, str):
        if targets != "all-linear" and not any(re.fullmatch(targets, m) for m in modules):
            raise InvalidAdapterError(
                P.UNKNOWN_TARGET,
                f"target_modules pattern {targets!r} matches no module of base {base.name}",
            )
        return sorted({m.rsplit(".", 1)[-1] for m in ranks})
    if not isinstance(targets, list) or not targets:
        raise InvalidAdapterError(P.NOT_PEFT, "adapter_config.json lists no target_modules")
    missing = [t for t in targets if not any(m == t or m.endswith("." + str(t)) for m in modules)]
    if missing:
        raise InvalidAdapterError(
            P.UNKNOWN_TARGET,
            f"target modules {missing} do not exist in base {base.name} (it has "
            f"{base.architecture.get('target_modules')}); retrain against this base or pass "
            "the right --base",
        )
    return sorted(str(t) for t in targets)


def check_against_base(adapter: AdapterDir, base: BaseModel, max_lora_rank: int) -> PeftSummary:
    """Tensor names/shapes, rank and target modules against ``base``."""
    config = adapter.config
    ranks = _check_tensors(adapter, base)
    declared = [config.get("r", 0), *dict(config.get("rank_pattern") or {}).values()]
    top = max([*ranks.values(), *(int(r) for r in declared if isinstance(r, int))])
    if top > max_lora_rank:
        raise InvalidAdapterError(
            P.RANK_TOO_HIGH,
            f"LoRA rank {top} is above the serving limit {max_lora_rank} (vLLM "
            "--max-lora-rank); retrain with a lower r, or raise REGISTRY_MAX_LORA_RANK "
            "together with the servers' --max-lora-rank",
        )
    targets = _check_targets(config, base, ranks)
    try:
        return PeftSummary(
            r=int(config.get("r", top)),
            lora_alpha=float(config.get("lora_alpha", config.get("r", top))),
            target_modules=tuple(targets),
            lora_dropout=float(config.get("lora_dropout") or 0.0),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidAdapterError(P.NOT_PEFT, f"bad value in adapter_config.json: {exc}") from None


def check_chat_template(adapter: AdapterDir, base: BaseModel) -> str | None:
    """The chat template's digest; an adapter's own template must equal the base's."""
    try:
        template = chat_template({f.relpath: f.path for f in adapter.files})
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapterError(
            P.CHAT_TEMPLATE_MISMATCH, f"unreadable tokenizer file: {exc}"
        ) from None
    digest = template_digest(template)
    if digest is not None and digest != base.chat_template_digest:
        raise InvalidAdapterError(
            P.CHAT_TEMPLATE_MISMATCH,
            f"the adapter's chat template differs from base {base.name}'s; the gateway serves "
            "the base's template, so remove the adapter's tokenizer files or register a base "
            "with the template the adapter was trained with",
        )
    return base.chat_template_digest


def check_schema(schema: Any, source: str) -> dict[str, Any]:
    """A valid JSON Schema object (jsonschema's metaschema check)."""
    if not isinstance(schema, dict):
        raise InvalidAdapterError(P.BAD_SCHEMA, f"{source} is not a JSON Schema object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidAdapterError(
            P.BAD_SCHEMA, f"{source} is not a valid JSON Schema: {exc.message}"
        ) from None
    return schema


def load_schema_file(path: Path) -> dict[str, Any]:
    """Read and check a JSON Schema file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapterError(P.BAD_SCHEMA, f"cannot read schema {path}: {exc}") from None
    return check_schema(data, str(path))


def training_args(adapter: AdapterDir) -> dict[str, Any] | None:
    """``training_args.json`` from the adapter dir, if it is a JSON object."""
    path = adapter.file("training_args.json")
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapterError(P.BAD_META, f"training_args.json is not JSON: {exc}") from None
    return data if isinstance(data, dict) else {"value": data}
