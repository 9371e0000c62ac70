"""How big an adapter may be: its scaling, its weights, and its update to each base layer.

An adapter with finite but huge numbers (a ``lora_B`` of 3e38, ``lora_alpha`` of 1e300)
passed every older check and, served once, left vLLM answering ``""`` for every tenant
until the engine restarted (issue 17). vLLM folds the scaling into ``lora_B`` when it
loads an adapter and computes in float16 or bfloat16, so a push refuses, before anything
is written:

- without a setting to relax it (nothing served can hold it): a weight, or a ``lora_B``
  times its scaling, whose magnitude overflows float16 (> 65504); a scaling
  (``lora_alpha / r``, ``lora_alpha / sqrt(r)`` with ``use_rslora``, and each
  ``alpha_pattern`` / ``rank_pattern`` entry) that is not finite or overflows float16;
- above a measured bound, each a setting (:class:`Bounds`, from ``REGISTRY_MAX_*``): the
  largest |weight|, the largest scaling, and the effective update of each module,
  ``||scaling * B @ A||_F`` against the base layer's ``||W||_F``.

The figures come from :func:`figures` (which reads the tensors) and the verdict from
:func:`refusal`, a pure function over them. ``bench/adapter_bounds.py`` prints the
figures for the demo adapters and a foreign one; ``docs/registry.md`` says how the
defaults were chosen.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.architecture import TensorInfo
from registry.errors import AdapterProblem as P
from registry.errors import InvalidAdapterError
from registry.weights import TensorStats, update_norms

#: The largest finite float16 value: what the engine may compute in.
FP16_MAX = 65504.0
#: Defaults of the measured bounds (``bench/adapter_bounds.py``; docs/registry.md).
DEFAULT_MAX_WEIGHT_ABS = 100.0
DEFAULT_MAX_LORA_SCALE = 64.0
DEFAULT_MAX_UPDATE_RATIO = 4.0
#: A LoRA tensor's name: its module, and which factor (``lora_A``/``lora_B`` of a linear
#: layer, ``lora_embedding_A``/``_B`` of an embedding).
LORA_TENSOR = re.compile(
    r"base_model\.model\.(?P<module>.+)\."
    r"(?:(?P<linear>lora_[AB])\.weight|(?P<embedding>lora_embedding_[AB]))"
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The measured bounds a push holds an adapter to (``REGISTRY_MAX_*``)."""

    max_weight_abs: float = DEFAULT_MAX_WEIGHT_ABS
    max_lora_scale: float = DEFAULT_MAX_LORA_SCALE
    max_update_ratio: float = DEFAULT_MAX_UPDATE_RATIO


@dataclass(frozen=True, slots=True)
class ModuleUpdate:
    """One module's effective update against its base layer."""

    module: str
    scale: float
    update_norm: float  # ||scale * B @ A||_F
    base_norm: float | None  # ||W||_F; None: not known (see Figures.skipped)

    @property
    def ratio(self) -> float | None:
        """update / base; None when the base norm is unknown or zero."""
        if not self.base_norm:
            return None
        return self.update_norm / self.base_norm


@dataclass(frozen=True, slots=True)
class Figures:
    """What the bounds are judged on."""

    max_abs: Mapping[str, float]  # tensor -> largest |value|
    scalings: Mapping[str, float]  # config field -> scaling it gives
    updates: tuple[ModuleUpdate, ...] = ()
    skipped: str | None = None  # why the update check could not run, if it could not


def module_of(tensor: str) -> tuple[str, str] | None:
    """(module, ``A`` or ``B``) of a LoRA tensor name, else None."""
    match = LORA_TENSOR.fullmatch(tensor)
    if match is None:
        return None
    part = match["linear"] or match["embedding"]
    return match["module"], part[-1]


def _pattern_key(pattern: Mapping[str, Any], module: str) -> str | None:
    """The pattern entry PEFT applies to ``module`` (a suffix, or a regex for the suffix)."""
    for key in pattern:
        if module == key or module.endswith("." + key):
            return key
        try:
            if re.fullmatch(rf"(?:.*\.)?(?:{key})", module):
                return key
        except re.error:
            continue
    return None


def _scale(alpha: float, rank: int, rslora: bool) -> float:
    try:
        return float(alpha) / (math.sqrt(rank) if rslora else rank)
    except OverflowError:
        return math.inf


def scalings(config: Mapping[str, Any]) -> dict[str, float]:
    """Every scaling the config can give a module, keyed by the fields that give it."""
    r, alpha = int(config["r"]), config.get("lora_alpha", config["r"])
    rslora = bool(config.get("use_rslora"))
    div = "sqrt(r)" if rslora else "r"
    out = {f"lora_alpha / {div}": _scale(alpha, r, rslora)}
    alphas = dict(config.get("alpha_pattern") or {})
    ranks = dict(config.get("rank_pattern") or {})
    for key in sorted({*alphas, *ranks}):
        a_label = f"alpha_pattern[{key!r}]" if key in alphas else "lora_alpha"
        r_label = f"rank_pattern[{key!r}]" if key in ranks else "r"
        r_label = f"sqrt({r_label})" if rslora else r_label
        out[f"{a_label} / {r_label}"] = _scale(alphas.get(key, alpha), ranks.get(key, r), rslora)
    return out


def module_scale(config: Mapping[str, Any], module: str) -> float:
    """The scaling applied to ``module``: the larger of its pattern's and the global one.

    PEFT applies ``alpha_pattern`` / ``rank_pattern``; an engine may read only
    ``lora_alpha / r``. The larger of the two bounds what either serves.
    """
    r, alpha = int(config["r"]), config.get("lora_alpha", config["r"])
    rslora = bool(config.get("use_rslora"))
    alphas = dict(config.get("alpha_pattern") or {})
    ranks = dict(config.get("rank_pattern") or {})
    a_key, r_key = _pattern_key(alphas, module), _pattern_key(ranks, module)
    own = _scale(
        alphas[a_key] if a_key is not None else alpha,
        ranks[r_key] if r_key is not None else r,
        rslora,
    )
    return max(own, _scale(alpha, r, rslora))


def check_absolute(
    config: Mapping[str, Any], stats: Mapping[str, TensorStats], source: str
) -> None:
    """Refuse what no setting allows: float16 overflow in a weight, a scaling, or B x scale."""
    for field, value in scalings(config).items():
        if not math.isfinite(value) or value > FP16_MAX:
            raise InvalidAdapterError(
                P.SCALING_ABSURD,
                f"adapter_config.json: the scaling {field} is {value:g}, above {FP16_MAX:g} "
                "(the largest float16 value), so no engine can apply it; retrain with a "
                "lora_alpha near r (e.g. r 8, lora_alpha 16)",
            )
    for tensor, found in sorted(stats.items()):
        if found.max_abs > FP16_MAX:
            raise InvalidAdapterError(
                P.WEIGHT_OVERFLOW,
                f"tensor {tensor!r} in {source} holds a value of magnitude {found.max_abs:g}, "
                f"above {FP16_MAX:g} (the largest float16 value); served in float16 it is "
                "infinite and corrupts the engine for every tenant: retrain (lower the "
                "learning rate, clip gradients) and save again",
            )
        where = module_of(tensor)
        if where is None or where[1] != "B":
            continue
        scale = module_scale(config, where[0])
        if found.max_abs * scale > FP16_MAX:
            raise InvalidAdapterError(
                P.WEIGHT_OVERFLOW,
                f"tensor {tensor!r} in {source} times its scaling {scale:g} reaches "
                f"{found.max_abs * scale:g}, above {FP16_MAX:g} (the largest float16 "
                "value); vLLM folds the scaling into lora_B, so the served weight would be "
                "infinite: retrain with a smaller lora_alpha or smaller weights",
            )


def figures(
    config: Mapping[str, Any],
    weights: Path,
    tensors: Mapping[str, TensorInfo],
    stats: Mapping[str, TensorStats],
    base_norms: Mapping[str, float] | None,
    skipped: str | None = None,
) -> Figures:
    """Read the A/B pairs of ``weights`` and measure each module's update."""
    pairs: dict[str, dict[str, TensorInfo]] = {}
    for tensor, info in tensors.items():
        where = module_of(tensor)
        if where is not None:
            pairs.setdefault(where[0], {})[where[1]] = info
    complete = {m: (p["A"], p["B"]) for m, p in sorted(pairs.items()) if set(p) == {"A", "B"}}
    updates = []
    for module, norm in update_norms(weights, complete).items():
        scale = module_scale(config, module)
        base = None if base_norms is None else base_norms.get(module)
        updates.append(ModuleUpdate(module, scale, scale * norm, base))
    return Figures(
        max_abs={t: s.max_abs for t, s in stats.items()},
        scalings=scalings(config),
        updates=tuple(updates),
        skipped=skipped,
    )


def refusal(found: Figures, bounds: Bounds) -> InvalidAdapterError | None:
    """The first measured bound ``found`` breaks, as the error to raise; None if none."""
    for field, value in found.scalings.items():
        if value > bounds.max_lora_scale:
            return InvalidAdapterError(
                P.SCALING_TOO_LARGE,
                f"adapter_config.json: the scaling {field} is {value:g}, above the bound "
                f"{bounds.max_lora_scale:g}; retrain with a lora_alpha near r, or raise "
                "REGISTRY_MAX_LORA_SCALE if this scaling is intended",
            )
    for tensor, value in sorted(found.max_abs.items()):
        if value > bounds.max_weight_abs:
            return InvalidAdapterError(
                P.WEIGHT_TOO_LARGE,
                f"tensor {tensor!r} holds a value of magnitude {value:g}, above the bound "
                f"{bounds.max_weight_abs:g}; retrain (lower the learning rate, clip "
                "gradients), or raise REGISTRY_MAX_WEIGHT_ABS if these weights are intended",
            )
    for update in found.updates:
        ratio = update.ratio
        if ratio is not None and ratio > bounds.max_update_ratio:
            return InvalidAdapterError(
                P.UPDATE_TOO_LARGE,
                f"module {update.module}: the adapter's update ||scaling * B @ A|| is "
                f"{update.update_norm:g}, {ratio:g} times the base layer's ||W|| "
                f"({update.base_norm:g}), above the bound {bounds.max_update_ratio:g}; it "
                "would replace the layer rather than adjust it: retrain (lower the learning "
                "rate or lora_alpha), or raise REGISTRY_MAX_UPDATE_RATIO if it is intended",
            )
    return None
