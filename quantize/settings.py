"""Quantize settings: the one place that reads the environment (prefix ``QUANTIZE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The project checkout (the package is installed editable by ``make setup``).
ROOT = Path(__file__).resolve().parents[1]


class QuantizeSettings(BaseSettings):
    """``QUANTIZE_PYTHON``: the quantize environment's interpreter (default
    ``.venv-quantize/bin/python`` of this checkout). ``QUANTIZE_EVAL_FILE``: the eval set
    (OpenAI ``messages`` records with ``reference``/``fields``/``label``).
    ``QUANTIZE_RECIPES_DIR``: a directory of your own recipes (``METHOD.toml``, validated
    the same way) instead of the checked-in ones, e.g. with stricter gates."""

    model_config = SettingsConfigDict(env_prefix="QUANTIZE_", extra="forbid", frozen=True)

    python: Path = Field(default=ROOT / ".venv-quantize" / "bin" / "python")
    eval_file: Path = Field(default=ROOT / "examples" / "data" / "eval.jsonl")
    max_new_tokens: int = Field(default=48, ge=1, le=512)
    recipes_dir: Path | None = None

    def recipe_file(self, method: str) -> Path | None:
        """The recipe file to use for ``method`` (None: the checked-in one)."""
        return None if self.recipes_dir is None else self.recipes_dir / f"{method}.toml"
