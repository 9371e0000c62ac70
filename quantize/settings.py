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
    (OpenAI ``messages`` records with ``reference``/``fields``/``label``)."""

    model_config = SettingsConfigDict(env_prefix="QUANTIZE_", extra="forbid", frozen=True)

    python: Path = Field(default=ROOT / ".venv-quantize" / "bin" / "python")
    eval_file: Path = Field(default=ROOT / "examples" / "data" / "eval.jsonl")
    max_new_tokens: int = Field(default=48, ge=1, le=512)
