"""The worker's progress, relayed: a bar (tqdm) on a terminal, plain lines otherwise.

The worker prints ``progress: STEP`` or ``progress: STEP [i/n]`` (step i of n has
started). Counted steps drive one bar whose description is the current step; any other
line closes the bar and is printed as it is, so logs and tests read the same lines.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Never

from tqdm import tqdm

_COUNTED = re.compile(r"^(?P<step>.*) \[(?P<i>\d+)/(?P<n>\d+)\]$")


def counted(line: str) -> tuple[str, int, int] | None:
    """(step, i, n) of a ``STEP [i/n]`` line, or None."""
    m = _COUNTED.match(line)
    if m is None or int(m["n"]) < 1:
        return None
    return m["step"], int(m["i"]), int(m["n"])


class Relay:
    """Call with each progress line; :meth:`close` when the command is done."""

    def __init__(self, echo: Callable[[str], None], bar: bool | None = None) -> None:
        self._echo = echo
        self._bar_wanted = sys.stderr.isatty() if bar is None else bar
        self._bar: tqdm[Never] | None = None
        self._total = 0

    def __call__(self, line: str) -> None:
        found = counted(line) if self._bar_wanted else None
        if found is None:
            self.close()
            self._echo(line)
            return
        step, i, n = found
        if self._bar is None or self._total != n:
            self.close()
            self._bar, self._total = tqdm(total=n, unit="step", file=sys.stderr), n
        bar = self._bar
        bar.set_description(step)
        bar.update(max(0, i - 1 - int(bar.n)))  # the steps before this one are done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self._total - int(self._bar.n))
            self._bar.close()
            self._bar = None
