"""Quantize settings: the one place that reads the environment (prefix ``QUANTIZE_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The project checkout (the package is installed editable by ``make setup``, which
#: builds ``.venv-quantize`` in it).
ROOT = Path(__file__).resolve().parents[1]


class QuantizeSettings(BaseSettings):
    """``QUANTIZE_PYTHON``: the quantize environment's interpreter (default
    ``.venv-quantize/bin/python`` of this checkout). ``QUANTIZE_EVAL_FILE``: the eval set
    (OpenAI ``messages`` records with ``reference``/``fields``/``label``); no default
    (the CLI's ``--eval-set FILE`` sets it; the demo's is ``examples/data/eval.jsonl``).
    ``QUANTIZE_RECIPES_DIR``: a directory of your own recipes (``METHOD.toml``, validated
    the same way) instead of the checked-in ones, e.g. with stricter gates.
    ``QUANTIZE_TASKS``: which adapters get a task score and how it is scored, a JSON
    object of adapter name -> ``fields`` (the answer is JSON equal to the eval row's
    ``fields``) or ``label`` (the answer is the row's ``label``); none by default, and
    the CLI's ``--task NAME=KIND`` adds to it."""

    model_config = SettingsConfigDict(env_prefix="QUANTIZE_", extra="forbid", frozen=True)

    python: Path = Field(default=ROOT / ".venv-quantize" / "bin" / "python")
    eval_file: Path | None = None
    max_new_tokens: int = Field(default=48, ge=1, le=512)
    recipes_dir: Path | None = None
    tasks: dict[str, Literal["fields", "label"]] = Field(default_factory=dict)

    def task_of(self, adapter: str) -> str | None:
        """How ``adapter``'s answers are scored (None: no task score)."""
        return self.tasks.get(adapter)

    def recipe_file(self, method: str) -> Path | None:
        """The recipe file to use for ``method`` (None: the checked-in one)."""
        return None if self.recipes_dir is None else self.recipes_dir / f"{method}.toml"
