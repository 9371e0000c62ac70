"""Durations on the command line: ``90s``, ``30m``, ``1h``, ``2d`` or plain seconds."""

from __future__ import annotations

import math
import re

from registry.errors import BadRequestError

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d)?")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (0 or more); BadRequestError naming the accepted forms."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise BadRequestError(f"{text!r} is not a duration: give e.g. 90s, 30m, 1h, 2d or 0")
    seconds = float(found[1]) * _UNITS[found[2]]
    if not math.isfinite(seconds):
        raise BadRequestError(f"{text!r} is too long a duration")
    return seconds
