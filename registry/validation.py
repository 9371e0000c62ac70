"""Adapter validation: everything a push checks before it writes a byte.

Touches no database: a remote client can run it before it uploads (the base's layer
norms come through a callable). Reads ``adapter_config.json`` strictly (finite numbers,
bounded depth, typed fields), the safetensors header, and the tensor data (sizes, finite
values and magnitudes, :mod:`registry.weights`; the bounds on magnitudes are
:mod:`registry.adapter_bounds`); pickled weights are refused by name and never opened,
and only the files an adapter needs are accepted. The weights must hold exactly the
modules ``target_modules`` names. Each failure is an :class:`InvalidAdapterError` whose
``reason`` says which rule failed and whose message says what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from registry.adapter_bounds import LORA_TENSOR, Bounds, check_absolute, figures, refusal
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
from registry.jsondoc import JsonDocError, check_document, load_json
from registry.records import BaseModel, PeftSummary
from registry.weights import FLOAT_DTYPES, TensorStats, size_problem, tensor_stats

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: The files an adapter directory may hold (top level only): PEFT's config, weights and
#: README, an output schema, training arguments, and tokenizer / chat-template files.
ALLOWED_FILES = frozenset(
    {
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
        "README.md",
        "schema.json",
        "training_args.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "chat_template.jinja",
        "chat_template.json",
    }
)
#: The base's per-module ||W||_F for the modules asked for (None: unknown), and why any
#: are missing (a quantized base without a parent, say); see registry.catalog.base_norms.
NormSource = Callable[[Collection[str]], tuple[Mapping[str, float] | None, str | None]]


@dataclass(frozen=True, slots=True)
class AdapterDir:
    """A scanned adapter directory whose config is a PEFT LoRA config."""

    root: Path
    files: list[ScannedFile]
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]
    stats: dict[str, TensorStats] = field(default_factory=dict)

    def file(self, relpath: str) -> Path | None:
        return next((f.path for f in self.files if f.relpath == relpath), None)


def check_listing(root: Path | str, relpaths: list[str]) -> None:
    """Refuse an adapter directory by its file names alone (pickles, files an adapter does
    not need): a remote client checks this before it uploads a byte."""
    pickled = sorted(r for r in relpaths if Path(r).suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise InvalidAdapterError(
            P.PICKLED_WEIGHTS,
            f"{root} contains pickled files ({', '.join(pickled)}), which are never loaded; "
            "save the adapter with save_pretrained(..., safe_serialization=True) and "
            "remove the pickles",
        )
    unexpected = sorted(r for r in relpaths if r not in ALLOWED_FILES)
    if unexpected:
        raise InvalidAdapterError(
            P.UNEXPECTED_FILE,
            f"{root} holds {', '.join(unexpected)}, which an adapter does not need and the "
            "registry would store and serve to anyone who pulls it; remove it (an adapter "
            f"may hold only {', '.join(sorted(ALLOWED_FILES))})",
        )


def inspect_adapter_dir(root: Path, max_file_bytes: int) -> AdapterDir:
    """Scan ``root``; read and check its config, tensor header and tensor data (no base)."""
    try:
        files = scan_directory(root, max_file_bytes)
    except ScanError as exc:
        raise InvalidAdapterError(exc.problem, f"cannot push {root}: {exc}") from None
    names = {f.relpath: f.path for f in files}
    check_listing(root, list(names))
    if ADAPTER_CONFIG not in names:
        raise InvalidAdapterError(
            P.NOT_PEFT,
            f"{root} has no {ADAPTER_CONFIG}: push the directory written by PEFT's "
            "save_pretrained()",
        )
    config = _read_json(names[ADAPTER_CONFIG], P.BAD_CONFIG)
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
    check_config(config)
    if ADAPTER_WEIGHTS not in names:
        raise InvalidAdapterError(
            P.NO_WEIGHTS, f"{root} has no {ADAPTER_WEIGHTS}; save with safe_serialization=True"
        )
    tensors, stats = _read_tensors(names[ADAPTER_WEIGHTS])
    check_absolute(config, stats, ADAPTER_WEIGHTS)
    return AdapterDir(root, files, config, tensors, stats)


def _read_json(path: Path, problem: P) -> Any:
    try:
        return load_json(path)
    except JsonDocError as exc:
        raise InvalidAdapterError(problem, str(exc)) from None


def _read_tensors(path: Path) -> tuple[dict[str, TensorInfo], dict[str, TensorStats]]:
    try:
        tensors = read_safetensors_header(path)
    except ValueError as exc:
        raise InvalidAdapterError(P.BAD_SAFETENSORS, str(exc)) from None
    except OSError as exc:
        raise InvalidAdapterError(
            P.BAD_SAFETENSORS, f"cannot read {path}: {exc.strerror or exc}"
        ) from None
    if not tensors:
        raise InvalidAdapterError(P.NO_WEIGHTS, f"{ADAPTER_WEIGHTS} holds no tensors")
    for name, info in tensors.items():
        problem = size_problem(name, info)
        if problem is not None:
            raise InvalidAdapterError(P.BAD_SAFETENSORS, f"{ADAPTER_WEIGHTS}: {problem}")
    try:
        stats = tensor_stats(path, tensors)
    except OSError as exc:
        raise InvalidAdapterError(
            P.BAD_SAFETENSORS, f"cannot read {path}: {exc.strerror or exc}"
        ) from None
    for name, found in stats.items():
        if found.non_finite:
            raise InvalidAdapterError(
                P.NON_FINITE,
                f"tensor {name!r} in {ADAPTER_WEIGHTS} holds {found.non_finite} NaN or "
                "infinite value(s); a served adapter like that corrupts the engine's answers "
                "(for other adapters too), so fix the training run (learning rate, loss "
                "scaling) and save again",
            )
    return tensors, stats


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_positive(value: Any) -> bool:
    return _is_number(value) and bool(value > 0)


def _is_rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_config(config: dict[str, Any]) -> None:
    """The fields vLLM reads, typed and in range (finite numbers are checked on load)."""
    r = config.get("r")
    if not _is_rank(r):
        raise InvalidAdapterError(
            P.BAD_CONFIG,
            f"{ADAPTER_CONFIG}: r is {r!r}; it must be a whole number of at least 1 "
            '(e.g. "r": 8, not "8")',
        )
    alpha = config.get("lora_alpha", r)
    if not _is_positive(alpha):
        raise InvalidAdapterError(
            P.BAD_CONFIG, f"{ADAPTER_CONFIG}: lora_alpha is {alpha!r}; it must be a number > 0"
        )
    dropout = config.get("lora_dropout")
    if dropout is not None and (not _is_number(dropout) or not 0 <= dropout < 1):
        raise InvalidAdapterError(
            P.BAD_CONFIG,
            f"{ADAPTER_CONFIG}: lora_dropout is {dropout!r}; it must be a number in [0, 1)",
        )
    for key, valid, what in (
        ("rank_pattern", _is_rank, "whole numbers >= 1"),
        ("alpha_pattern", _is_positive, "numbers > 0"),
    ):
        pattern = config.get(key)
        if pattern is None:
            continue
        if not isinstance(pattern, dict) or not all(valid(v) for v in pattern.values()):
            raise InvalidAdapterError(
                P.BAD_CONFIG, f"{ADAPTER_CONFIG}: {key} must map module names to {what}"
            )
    saved = config.get("modules_to_save")
    if saved:
        raise InvalidAdapterError(
            P.UNSUPPORTED,
            f"{ADAPTER_CONFIG}: modules_to_save is {saved!r}; vLLM serves LoRA weights only, "
            "not full copies of modules, so retrain without modules_to_save",
        )
    targets = config.get("target_modules")
    if isinstance(targets, list) and not all(isinstance(t, str) and t for t in targets):
        raise InvalidAdapterError(
            P.BAD_CONFIG, f"{ADAPTER_CONFIG}: target_modules must be module names (strings)"
        )
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as exc:
            raise InvalidAdapterError(
                P.BAD_CONFIG,
                f"{ADAPTER_CONFIG}: target_modules {targets!r} is not a valid regular "
                f"expression ({exc}); give a list of module names or a valid pattern",
            ) from None


def _check_tensors(adapter: AdapterDir, base: BaseModel) -> tuple[dict[str, int], set[str]]:
    """Every tensor fits a base module; return module -> rank, and the embedding modules."""
    modules: dict[str, list[int]] = base.architecture.get("modules", {})
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    embeddings: set[str] = set()
    for tensor, info in adapter.tensors.items():
        match = LORA_TENSOR.fullmatch(tensor)
        if match is None:
            raise InvalidAdapterError(
                P.TENSOR_MISMATCH,
                f"unexpected tensor {tensor!r}: only lora_A/lora_B weights can be served "
                "(no bias, modules_to_save or DoRA tensors)",
            )
        module = match["module"]
        if info.dtype not in FLOAT_DTYPES:
            raise InvalidAdapterError(
                P.BAD_SAFETENSORS,
                f"tensor {tensor!r} is {info.dtype}; LoRA weights are floating point "
                "(F32, F16, BF16): save the adapter again without converting its weights",
            )
        if module not in modules:
            raise InvalidAdapterError(
                P.TENSOR_MISMATCH,
                f"tensor {tensor!r} targets {module!r}, which base model {base.name} does not "
                "have; was the adapter trained on a different base? pass --base",
            )
        part = "A" if (match["linear"] or match["embedding"]).endswith("A") else "B"
        embedding = match["embedding"] is not None
        if embedding:
            embeddings.add(module)
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
    return ranks, embeddings


def _targets(target: str, module: str) -> bool:
    """PEFT's rule for a target_modules list entry: the module's name or its last parts."""
    return module == target or module.endswith("." + target)


def _held(modules: Collection[str]) -> list[str]:
    return sorted({m.rsplit(".", 1)[-1] for m in modules})


def _mismatch(
    targets: Any, modules: Collection[str], stray: list[str], unused: list[str]
) -> InvalidAdapterError:
    untargeted = f"; weights for {stray[:3]}{' ...' if len(stray) > 3 else ''} are not targeted"
    no_weights = f"; {unused} have no weights"
    return InvalidAdapterError(
        P.TARGET_MISMATCH,
        f"{ADAPTER_CONFIG}: target_modules is {targets!r} but the weights hold "
        f"{_held(modules)}{untargeted if stray else ''}{no_weights if unused else ''}; an "
        "engine applies every module that has weights, so the recorded summary would not "
        "describe what is served: save the adapter again with target_modules naming "
        "exactly the modules it trained",
    )


def _check_targets(
    config: dict[str, Any], base: BaseModel, ranks: dict[str, int], embeddings: set[str]
) -> list[str]:
    """target_modules exist in ``base`` and name exactly the modules the weights hold."""
    targets = config.get("target_modules")
    modules = list(base.architecture.get("modules", {}))
    if isinstance(targets, str):
        if targets == "all-linear":
            # PEFT's all-linear: every linear layer but the output layer; no embedding.
            stray = [m for m in ranks if m in embeddings or m.rsplit(".", 1)[-1] == "lm_head"]
        elif not any(re.fullmatch(targets, m) for m in modules):
            raise InvalidAdapterError(
                P.UNKNOWN_TARGET,
                f"target_modules pattern {targets!r} matches no module of base {base.name}",
            )
        else:
            stray = [m for m in ranks if not re.fullmatch(targets, m)]
        if stray:
            raise _mismatch(targets, ranks, sorted(stray), [])
        return _held(ranks)
    if not isinstance(targets, list) or not targets:
        raise InvalidAdapterError(P.NOT_PEFT, "adapter_config.json lists no target_modules")
    missing = [t for t in targets if not any(_targets(str(t), m) for m in modules)]
    if missing:
        raise InvalidAdapterError(
            P.UNKNOWN_TARGET,
            f"target modules {missing} do not exist in base {base.name} (it has "
            f"{base.architecture.get('target_modules')}); retrain against this base or pass "
            "the right --base",
        )
    stray = sorted(m for m in ranks if not any(_targets(str(t), m) for t in targets))
    unused = [t for t in targets if not any(_targets(str(t), m) for m in ranks)]
    if stray or unused:
        raise _mismatch(targets, ranks, stray, unused)
    return sorted(str(t) for t in targets)


def check_against_base(
    adapter: AdapterDir,
    base: BaseModel,
    max_lora_rank: int,
    *,
    bounds: Bounds | None = None,
    norms: NormSource | None = None,
) -> PeftSummary:
    """Tensor names/shapes, rank, target modules and magnitude bounds against ``base``.

    ``norms`` gives the base's per-module ``||W||_F`` for the update bound; without it
    (or for modules it does not know) that one check is skipped.
    """
    config = adapter.config
    ranks, embeddings = _check_tensors(adapter, base)
    declared = [int(config["r"]), *dict(config.get("rank_pattern") or {}).values()]
    top = max([*ranks.values(), *declared])
    if top > max_lora_rank:
        raise InvalidAdapterError(
            P.RANK_TOO_HIGH,
            f"LoRA rank {top} is above the serving limit {max_lora_rank} (vLLM "
            "--max-lora-rank); retrain with a lower r, or raise REGISTRY_MAX_LORA_RANK "
            "together with the servers' --max-lora-rank",
        )
    targets = _check_targets(config, base, ranks, embeddings)
    check_bounds(adapter, bounds or Bounds(), norms, ranks)
    return PeftSummary(
        r=int(config["r"]),
        lora_alpha=float(config.get("lora_alpha", config["r"])),
        target_modules=tuple(targets),
        lora_dropout=float(config.get("lora_dropout") or 0.0),
    )


def check_bounds(
    adapter: AdapterDir, bounds: Bounds, norms: NormSource | None, modules: Collection[str]
) -> None:
    """Refuse an adapter above a measured bound (:func:`registry.adapter_bounds.refusal`)."""
    weights = adapter.file(ADAPTER_WEIGHTS)
    assert weights is not None
    base_norms, skipped = norms(modules) if norms is not None else (None, "no base norms")
    found = figures(adapter.config, weights, adapter.tensors, adapter.stats, base_norms, skipped)
    problem = refusal(found, bounds)
    if problem is not None:
        raise problem


def check_chat_template(adapter: AdapterDir, base: BaseModel) -> str | None:
    """The chat template's digest; an adapter's own template must equal the base's."""
    try:
        template = chat_template({f.relpath: f.path for f in adapter.files})
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
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
        check_document(schema, source)
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except JsonDocError as exc:
        raise InvalidAdapterError(P.BAD_SCHEMA, str(exc)) from None
    except jsonschema.SchemaError as exc:
        raise InvalidAdapterError(
            P.BAD_SCHEMA, f"{source} is not a valid JSON Schema: {exc.message}"
        ) from None
    except RecursionError:
        raise InvalidAdapterError(P.BAD_SCHEMA, f"{source} is nested too deeply") from None
    return schema


def load_schema_file(path: Path) -> dict[str, Any]:
    """Read and check a JSON Schema file."""
    try:
        data = load_json(path, str(path))
    except JsonDocError as exc:
        raise InvalidAdapterError(P.BAD_SCHEMA, str(exc)) from None
    return check_schema(data, str(path))


def training_args(adapter: AdapterDir) -> dict[str, Any] | None:
    """``training_args.json`` from the adapter dir, if it is a JSON object."""
    path = adapter.file("training_args.json")
    if path is None:
        return None
    data = _read_json(path, P.BAD_META)
    return data if isinstance(data, dict) else {"value": data}
