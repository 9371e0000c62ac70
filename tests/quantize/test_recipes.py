"""Recipes are validated data: every checked-in one loads, and a wrong one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantize.recipes import METHODS, RecipeError, load_recipe, recipe_path


@pytest.mark.parametrize(
    ("method", "scheme", "modifiers"),
    [
        ("awq", "W4A16_ASYM", ["AWQModifier", "QuantizationModifier"]),
        ("gptq", "W4A16", ["GPTQModifier"]),
        ("fp8", "FP8_DYNAMIC", ["QuantizationModifier"]),
    ],
)
def test_each_scheme_has_one_valid_recipe(method: str, scheme: str, modifiers: list[str]) -> None:
    recipe, digest = load_recipe(method)
    assert recipe.scheme == scheme
    assert [m.type for m in recipe.modifiers] == modifiers
    assert digest.startswith("sha256:") and len(digest) == 71
    assert (recipe.calibration is None) == (method == "fp8")  # FP8 dynamic needs no data
    assert set(METHODS) == {"awq", "gptq", "fp8"}


def test_unknown_method_is_refused() -> None:
    with pytest.raises(RecipeError, match="unknown method 'int3'"):
        load_recipe("int3")


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "fp8.toml"
    bad.write_text(recipe_path("fp8").read_text() + '\nsheme = "FP8"\n')
    with pytest.raises(RecipeError, match="sheme"):
        load_recipe("fp8", bad)


def test_a_recipe_for_another_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="is for gptq"):
        load_recipe("awq", recipe_path("gptq"))


def test_calibration_bounds_are_checked(tmp_path: Path) -> None:
    text = recipe_path("gptq").read_text().replace("max_samples = 64", "max_samples = 2")
    bad = tmp_path / "gptq.toml"
    bad.write_text(text)
    with pytest.raises(RecipeError, match="max_samples is below min_samples"):
        load_recipe("gptq", bad)
