"""Reading an adapter's tensor data, not only its header: sizes, finite values, magnitudes.

One adapter whose ``lora_B`` was all NaN, served once, left vLLM answering ``""`` for
the *base model* too, with HTTP 200 (issue 10, section 2); so did one whose values were
finite but huge (3e38, issue 17). A push therefore reads every floating-point tensor,
counts its NaN and infinite values and finds its largest magnitude, naming the tensor.
The reads run on a memory map in bounded chunks and decode every float format
safetensors has: F16, F32 and F64 through numpy; BF16 by widening its bits to F32; the
two F8 formats through a 256-entry table (E4M3 has no infinity and one NaN pattern;
E5M2 is IEEE-like).

The same decoding gives :func:`frobenius_norms` (a base model's per-module ``||W||_F``,
float64 sums) and :func:`update_norms`: each module's ``||B @ A||_F`` without forming
``B @ A``, since ``||BA||_F^2 = trace(A^T B^T B A) = sum((B^T B) * (A A^T))``, two
``r x r`` matrices computed on the mapped file (no copy of a float32 factor).
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from registry.architecture import TensorInfo, read_safetensors_header

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
FLOAT_DTYPES = frozenset({*_IEEE, "BF16", "F8_E4M3", "F8_E5M2"})
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


def _f8_table(exp_bits: int, man_bits: int, *, ieee: bool) -> np.ndarray:
    """The float32 value of each of the 256 bytes of an 8-bit float format."""
    bias = 2 ** (exp_bits - 1) - 1
    table = np.empty(256, np.float32)
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exp = (byte >> man_bits) & ((1 << exp_bits) - 1)
        man = byte & ((1 << man_bits) - 1)
        top = exp == (1 << exp_bits) - 1
        if top and (ieee or man == (1 << man_bits) - 1):
            table[byte] = sign * math.inf if ieee and man == 0 else math.nan
        elif exp == 0:
            table[byte] = sign * man / (1 << man_bits) * 2.0 ** (1 - bias)
        else:
            table[byte] = sign * (1 + man / (1 << man_bits)) * 2.0 ** (exp - bias)
    return table


_F8 = {"F8_E4M3": _f8_table(4, 3, ieee=False), "F8_E5M2": _f8_table(5, 2, ieee=True)}


def _decode(buf: mmap.mmap, dtype: str, count: int, offset: int) -> np.ndarray:
    """``count`` values of a float ``dtype`` at ``offset``, as a float array."""
    if dtype in _IEEE:
        return np.frombuffer(buf, _IEEE[dtype], count, offset)
    if dtype == "BF16":
        bits = np.frombuffer(buf, np.uint16, count, offset)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return _F8[dtype][np.frombuffer(buf, np.uint8, count, offset)]


def _chunks(buf: mmap.mmap, info: TensorInfo) -> Iterator[np.ndarray]:
    item = ITEM_BYTES[info.dtype]
    total = (info.end - info.start) // item
    for first in range(0, total, _CHUNK):
        count = min(_CHUNK, total - first)
        yield _decode(buf, info.dtype, count, info.start + first * item)


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap | None]:
    """A read-only memory map of ``path`` (None for an empty file, which mmap refuses)."""
    with open(path, "rb") as fh:
        if fh.seek(0, 2) == 0:
            yield None
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            yield buf


@dataclass(frozen=True, slots=True)
class TensorStats:
    """What one pass over a float tensor finds: NaN/infinite values and the largest |value|."""

    non_finite: int
    max_abs: float


def tensor_stats(path: Path, tensors: Mapping[str, TensorInfo]) -> dict[str, TensorStats]:
    """Stats of every float tensor in ``path`` (in file order; others are left out)."""
    floats = sorted(
        ((n, t) for n, t in tensors.items() if t.dtype in FLOAT_DTYPES),
        key=lambda item: item[1].start,
    )
    with _mapped(path) as buf:
        return {name: _stats(buf, info) for name, info in floats}


# Each helper below returns plain numbers or a copy: no array may still view the map when
# it closes (mmap refuses to close while a numpy array exports its buffer).
def _stats(buf: mmap.mmap | None, info: TensorInfo) -> TensorStats:
    bad, top = 0, 0.0
    for values in _chunks(buf, info) if buf is not None else ():
        if not values.size:
            continue
        # max and min propagate NaN and show infinities: count only when one is not finite.
        hi, lo = float(values.max()), float(values.min())
        if math.isfinite(hi) and math.isfinite(lo):
            top = max(top, hi, -lo)
        else:
            bad += values.size - int(np.count_nonzero(np.isfinite(values)))
    return TensorStats(bad, top if not bad else math.nan)


def _sum_of_squares(buf: mmap.mmap | None, info: TensorInfo) -> float:
    total = 0.0
    for values in _chunks(buf, info) if buf is not None else ():
        wide = values.astype(np.float64)
        total += float(np.dot(wide, wide))
    return total


def first_non_finite(path: Path, tensors: Mapping[str, TensorInfo]) -> tuple[str, int] | None:
    """(tensor name, how many non-finite values) of the first bad tensor, else None."""
    for name, found in tensor_stats(path, tensors).items():
        if found.non_finite:
            return name, found.non_finite
    return None


def update_norms(
    path: Path, pairs: Mapping[str, tuple[TensorInfo, TensorInfo]]
) -> dict[str, float]:
    """``||B @ A||_F`` of each module's (A [r, in], B [out, r]) pair in ``path``."""
    with _mapped(path) as buf:
        if buf is None:
            return dict.fromkeys(pairs, 0.0)
        return {module: _update_norm(buf, a, b) for module, (a, b) in pairs.items()}


def _view(buf: mmap.mmap, info: TensorInfo) -> np.ndarray:
    rows, cols = info.shape
    values = _decode(buf, info.dtype, rows * cols, info.start)
    return values.astype(np.float32, copy=False).reshape(rows, cols)


def _update_norm(buf: mmap.mmap, a_info: TensorInfo, b_info: TensorInfo) -> float:
    """sqrt(sum((B^T B) * (A A^T))): two r x r products, never the [out, in] matrix."""
    a, b = _view(buf, a_info), _view(buf, b_info)
    aat = (a @ a.T).astype(np.float64)
    btb = (b.T @ b).astype(np.float64)
    return math.sqrt(max(float(np.sum(btb * aat)), 0.0))


def frobenius_norms(path: Path, tensors: Mapping[str, TensorInfo], names: Iterable[str]
                    ) -> dict[str, float]:  # fmt: skip
    """``||W||_F`` (float64 sums) of each float tensor of ``names`` found in ``tensors``."""
    wanted = sorted(
        ((n, tensors[n]) for n in set(names) if n in tensors and tensors[n].dtype in FLOAT_DTYPES),
        key=lambda item: item[1].start,
    )
    with _mapped(path) as buf:
        return {name: math.sqrt(_sum_of_squares(buf, info)) for name, info in wanted}


def module_norms(weight_files: Iterable[Path], modules: Iterable[str]) -> dict[str, float]:
    """``||W||_F`` of each module's ``.weight`` in a base's safetensors files.

    A tied ``lm_head`` (no weight of its own) gets the embedding's norm, as it serves it.
    """
    wanted = set(modules)
    norms: dict[str, float] = {}
    for path in weight_files:
        header = read_safetensors_header(path)
        names = {f"{m}.weight" for m in wanted}
        if "lm_head" in wanted:
            names |= {n for n in header if n.endswith("embed_tokens.weight")}
        found = frobenius_norms(path, header, names)
        norms.update({n.removesuffix(".weight"): v for n, v in found.items()})
    if "lm_head" in wanted and "lm_head" not in norms:
        embed = next((v for m, v in norms.items() if m.endswith("embed_tokens")), None)
        if embed is not None:
            norms["lm_head"] = embed
    return {m: v for m, v in norms.items() if m in wanted}
