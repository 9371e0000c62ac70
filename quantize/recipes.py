"""Quantization recipes: one checked-in, validated TOML file per scheme (``recipes/``).

A recipe is data, as llm-compressor's own recipes are: which modifiers run with which
arguments, what calibration it needs, which architectures it is known to handle, and the
fidelity gate a variant made with it must pass. Unknown fields are refused, so a typo in
a recipe fails loudly instead of silently quantizing something else. The recipe's digest
(sha256 of the file's bytes) is recorded on every variant made with it.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
Method = Literal["awq", "gptq", "fp8"]
METHODS: tuple[Method, ...] = ("awq", "gptq", "fp8")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Modifier(_Strict):
    """One llm-compressor modifier and its keyword arguments."""

    type: Literal["AWQModifier", "GPTQModifier", "QuantizationModifier"]
    args: dict[str, Any] = Field(default_factory=dict)


class Calibration(_Strict):
    """How many calibration samples the recipe needs (fewer is refused) and uses."""

    min_samples: int = Field(ge=1)
    max_samples: int = Field(ge=1)
    max_seq_length: int = Field(ge=8)

    @model_validator(mode="after")
    def _ordered(self) -> Calibration:
        if self.max_samples < self.min_samples:
            raise ValueError("max_samples is below min_samples")
        return self


class Gate(_Strict):
    """What a variant (and each adapter on it) must keep, measured against the parent."""

    max_perplexity_ratio: float = Field(ge=1.0)
    min_token_agreement: float = Field(ge=0.0, le=1.0)
    max_task_score_drop: float = Field(ge=0.0, le=1.0)


class Recipe(_Strict):
    method: Method
    scheme: Literal["W4A16_ASYM", "W4A16", "FP8_DYNAMIC"]
    architectures: tuple[str, ...] = Field(min_length=1)
    modifiers: tuple[Modifier, ...] = Field(min_length=1)
    calibration: Calibration | None = None
    gate: Gate


class RecipeError(ValueError):
    """A recipe file that is missing or does not validate."""


def recipe_path(method: str) -> Path:
    return RECIPES_DIR / f"{method}.toml"


def load_recipe(method: str, path: Path | None = None) -> tuple[Recipe, str]:
    """The recipe for ``method`` and its digest (``sha256:<hex>`` of the file)."""
    if path is None and method not in METHODS:
        raise RecipeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    source = path or recipe_path(method)
    try:
        raw = source.read_bytes()
        recipe = Recipe.model_validate(tomllib.loads(raw.decode("utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise RecipeError(f"recipe {source} is not valid: {exc}") from None
    if recipe.method != method:
        raise RecipeError(f"recipe {source} is for {recipe.method}, not {method}")
    return recipe, "sha256:" + hashlib.sha256(raw).hexdigest()
