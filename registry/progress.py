"""Byte progress bars (tqdm, on stderr) for large pushes and pulls."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

from registry.blobs import ByteCallback


def want_progress(requested: bool | None, total: int, min_bytes: int) -> bool:
    """``requested`` if given; else only when stderr is a terminal and the data is large."""
    if requested is not None:
        return requested
    return sys.stderr.isatty() and total >= min_bytes


@contextmanager
def byte_progress(total: int, desc: str, enabled: bool) -> Iterator[ByteCallback | None]:
    """Yield a callback that advances a bar by n bytes (None when disabled)."""
    if not enabled:
        yield None
        return
    with tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr
    ) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        yield advance
