"""The int4-on-this-CPU decision (server/engine_support.py), table-tested."""

from pathlib import Path

import pytest

from server import engine_support as es

CT_INT4 = {"quantization_config": {"config_groups": {"group_0": {"weights": {"num_bits": 4}}}}}
CT_FP8 = {"quantization_config": {"config_groups": {"group_0": {"weights": {"num_bits": 8}}}}}
LEGACY_AWQ = {"quantization_config": {"quant_method": "awq", "bits": 4}}
AVX2 = frozenset({"avx", "avx2", "fma"})


@pytest.mark.parametrize(
    ("config", "bits"),
    [
        ({}, set()),
        ({"quantization_config": None}, set()),
        ({"quantization_config": {"config_groups": "junk"}}, set()),
        ({"quantization_config": {"config_groups": {"g": {"weights": None}}}}, set()),
        (CT_INT4, {4}),
        (CT_FP8, {8}),
        (LEGACY_AWQ, {4}),
    ],
)
def test_weight_bits(config: dict[str, object], bits: set[int]) -> None:
    assert es.weight_bits(config) == bits


@pytest.mark.parametrize(
    ("config", "flags", "cpu_build", "refused"),
    [
        (CT_INT4, AVX2, True, True),
        (LEGACY_AWQ, AVX2, True, True),
        (CT_INT4, AVX2 | {"avx512f"}, True, True),  # F alone does not load the AVX-512 build
        (CT_INT4, AVX2 | es.AVX512, True, False),
        (CT_INT4, AVX2, False, False),  # a GPU build brings its own int4 kernels
        (CT_FP8, AVX2, True, False),
        ({}, AVX2, True, False),
    ],
)
def test_refusal(
    config: dict[str, object], flags: frozenset[str], cpu_build: bool, refused: bool
) -> None:
    why = es.refusal(config, flags, cpu_build)
    assert (why is not None) == refused
    if why is not None:
        assert "AVX-512" in why and "fp8 variant" in why


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\nbugs\t: none\n")
    assert es.cpu_flags(info) == {"fpu", "avx2", "avx512f"}
    assert es.cpu_flags(tmp_path / "missing") == frozenset()
