"""JSON on the request path: msgspec where the text is plain JSON, the standard library
where it is not.

msgspec reads and writes JSON several times faster than `json` (bench/README.md, "A lean
request path"). Where it refuses a text that
`json` accepts (another encoding than UTF-8, a lone surrogate, NaN or a number past a
double) `json` reads it, so nothing that was read before is refused now, and its error
messages stay the ones clients saw. `dumps` writes through `json` what msgspec cannot
(a lone surrogate); a non-finite float, which msgspec would write as null, never gets
there: the request path refuses a request that holds one (`non_finite`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

_decode = msgspec.json.decode
_encode = msgspec.json.encode


def loads(raw: bytes) -> Any:
    """`raw` read as JSON (json.loads' errors where neither reads it)."""
    return loads_lax(raw)[0]


def loads_lax(raw: bytes) -> tuple[Any, bool]:
    """`raw` read as JSON, and whether only `json` read it (it may then hold NaN)."""
    try:
        return _decode(raw), False
    except msgspec.DecodeError:
        return json.loads(raw), True


def dumps(value: Any) -> bytes:
    """`value` as compact JSON in UTF-8."""
    try:
        return _encode(value)
    except (TypeError, UnicodeEncodeError):
        return json.dumps(value, separators=(",", ":")).encode()


def non_finite(value: Any) -> bool:
    """`value` holds NaN or an infinity somewhere (pure): JSON has no such number."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(non_finite(v) for v in value)
    return False
