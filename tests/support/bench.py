"""A bench script imported as a module, for tests of its pure parts."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str) -> ModuleType:
    """`bench/NAME.py`, imported (the scripts import `harness` as a sibling)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        if str(BENCH) in sys.path:  # a script may drop its own directory
            sys.path.remove(str(BENCH))
