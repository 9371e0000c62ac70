"""Reading the small JSON files of an adapter strictly: bounded depth, finite numbers.

``json.loads`` accepts ``NaN``/``Infinity`` (and ``1e999`` becomes ``inf``), and raises
``RecursionError`` on deep nesting. Neither belongs in a registry: a NaN ``lora_alpha``
used to crash a push inside SQLite, and a deep document crashed it outright. Every
refusal is a :class:`JsonDocError` whose message names the file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

#: Deeper than any real config, schema or training-args file.
MAX_DEPTH = 64


class JsonDocError(ValueError):
    """A JSON file that cannot be accepted; the message says where and why."""


def _field(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def check_document(value: Any, source: str) -> Any:
    """``value`` if it is at most MAX_DEPTH deep and holds only finite numbers."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, where = stack.pop()
        if len(where) > MAX_DEPTH:
            raise JsonDocError(f"{source} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, float) and not math.isfinite(item):
            raise JsonDocError(
                f"{source}: {_field(where)} is {item!r}; only finite numbers are accepted"
            )
        if isinstance(item, dict):
            stack.extend((v, (*where, str(k))) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, (*where, i)) for i, v in enumerate(item))
    return value


def load_json(path: Path, source: str | None = None) -> Any:
    """Parse ``path`` (UTF-8 JSON) and :func:`check_document` it."""
    source = source or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JsonDocError(f"cannot read {source}: {exc}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonDocError(f"{source} is not JSON: {exc}") from None
    except RecursionError:
        raise JsonDocError(f"{source} is nested deeper than {MAX_DEPTH} levels") from None
    return check_document(value, source)
