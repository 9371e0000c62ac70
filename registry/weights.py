"""Checking an adapter's tensor data, not only its header: sizes add up, numbers are finite.

One adapter whose ``lora_B`` was all NaN, served once, left vLLM answering ``""`` for
the *base model* too, with HTTP 200 (issue 10, section 2). A push therefore reads every
floating-point tensor and refuses NaN and infinity, naming the tensor. The check runs on
a memory map in bounded chunks: IEEE-style formats numpy knows (F16, F32, F64) go
through ``numpy.isfinite``; the others (BF16, F8) are checked on their bits: a value is
non-finite exactly when its exponent bits are all ones (E4M3 has no infinity, and its
NaN is exponent and mantissa all ones, the same mask test on seven bits).
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from registry.architecture import TensorInfo

#: Bytes per element of each safetensors dtype.
ITEM_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_IEEE: dict[str, type[np.floating]] = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
_BITS: dict[str, tuple[type[np.unsignedinteger], int]] = {
    "BF16": (np.uint16, 0x7F80),
    "F8_E5M2": (np.uint8, 0x7C),
    "F8_E4M3": (np.uint8, 0x7F),
}
#: Elements per chunk: bounds the temporaries to a few tens of MiB.
_CHUNK = 1 << 22


def size_problem(name: str, info: TensorInfo) -> str | None:
    """Why a tensor's byte range does not match its dtype and shape (None if it does)."""
    item = ITEM_BYTES.get(info.dtype)
    if item is None:
        return f"tensor {name!r} has unknown dtype {info.dtype!r}"
    count = 1
    for dim in info.shape:
        count *= dim
    if info.end - info.start != count * item:
        return (
            f"tensor {name!r} holds {info.end - info.start} bytes but {info.dtype} "
            f"{list(info.shape)} needs {count * item}; the file is damaged"
        )
    return None


def _count_non_finite(buf: mmap.mmap, info: TensorInfo) -> int:
    item = ITEM_BYTES[info.dtype]
    total = (info.end - info.start) // item
    bad = 0
    for first in range(0, total, _CHUNK):
        count = min(_CHUNK, total - first)
        offset = info.start + first * item
        if info.dtype in _IEEE:
            values = np.frombuffer(buf, _IEEE[info.dtype], count, offset)
            bad += count - int(np.count_nonzero(np.isfinite(values)))
        else:
            kind, mask = _BITS[info.dtype]
            bits = np.frombuffer(buf, kind, count, offset)
            bad += int(np.count_nonzero((bits & mask) == mask))
    return bad


def first_non_finite(path: Path, tensors: Mapping[str, TensorInfo]) -> tuple[str, int] | None:
    """(tensor name, how many non-finite values) of the first bad tensor, else None."""
    floats = [(n, t) for n, t in tensors.items() if t.dtype in _IEEE or t.dtype in _BITS]
    if not floats:
        return None
    with open(path, "rb") as fh:
        if fh.seek(0, 2) == 0:
            return None
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for name, info in sorted(floats, key=lambda item: item[1].start):
                bad = _count_non_finite(buf, info)
                if bad:
                    return name, bad
    return None
