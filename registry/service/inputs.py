"""What the service reads from a request, read strictly: a value that is not what it
should be is a 400 (:class:`BadRequestError`), never a 500, a silent clamp that hides a
client's bug, or a NaN that makes a wait endless or a lease eternal.

Pure functions of the raw text, so the rules are tested as a table.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from registry.errors import BadRequestError

#: The largest page token or change token a client may send (SQLite's integer range).
MAX_TOKEN = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
#: How deep a request's JSON may nest: records are a few levels deep; a 10,000-deep
#: list would be stored, then break every later read of it (recursion).
MAX_DEPTH = 64
#: The slowest a body may arrive on average, once the read timeout has passed: a modem's
#: pace (8 kbit/s) is fine; a byte now and then, holding a connection and a temp file
#: for ever, is not.
MIN_BYTES_PER_S = 1024


def whole(raw: str | None, name: str, *, low: int, high: int, default: int) -> int:
    """A whole number in ``low..high`` written in plain decimal digits (``default`` when
    absent or empty)."""
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw):
        raise BadRequestError(f"{name} must be a whole number {low}..{high}, not {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequestError(f"{name} must be a whole number {low}..{high}, not {value}")
    return value


def seconds(raw: str | None, name: str, *, high: float, default: float = 0.0) -> float:
    """A duration in seconds, zero or more (never ``nan`` or ``inf``); longer asks are held
    to ``high`` (a long poll answers by then anyway)."""
    if raw is None or raw == "":
        return default
    try:
        value = float(raw) if len(raw) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise BadRequestError(f"{name} must be a number of seconds, 0 or more, not {raw[:40]!r}")
    return min(value, high)


def json_value(data: bytes | str, where: str = "the request body") -> Any:
    """``data`` parsed as JSON, nested at most :data:`MAX_DEPTH` deep. ``NaN`` and
    ``Infinity`` are read as :func:`registry.wire.dumps` writes them: whether a value may
    be non-finite is each write's own check (a NaN lease TTL is refused there, with the
    error a directory gives), never the codec's."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise BadRequestError(f"{where} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise BadRequestError(f"{where} is not JSON: {exc}") from None
    if depth(value) > MAX_DEPTH:
        raise BadRequestError(f"{where} nests deeper than {MAX_DEPTH} levels")
    return value


def depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in children)
    return deepest


def crawling(received: int, elapsed_s: float, grace_s: float) -> bool:
    """Whether a body that has brought ``received`` bytes in ``elapsed_s`` seconds is too
    slow to wait for: after the first ``grace_s`` (the read timeout), it must average
    :data:`MIN_BYTES_PER_S` over the time since."""
    return elapsed_s > grace_s and received < MIN_BYTES_PER_S * (elapsed_s - grace_s)
