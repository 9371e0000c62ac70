"""Which adapter x variant pairs wait for a measurement (`registry.pending.pending_pairs`):
a table of registries in miniature, and the rule read through a real directory registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import registry
from registry.local import LocalRegistry
from registry.pending import PendingPair, pending_for, pending_in, pending_pairs
from registry.records import (
    AdapterVersion,
    Lineage,
    PairResult,
    PeftSummary,
    Quarantine,
    VariantInfo,
)
from tests.support.synthetic import write_base

TINY = registry.Digest.from_hex("a" * 64)
OTHER = registry.Digest.from_hex("b" * 64)
FP8 = registry.Digest.from_hex("c" * 64)
FP8_REMADE = registry.Digest.from_hex("d" * 64)
GPTQ = registry.Digest.from_hex("e" * 64)
MERGED = registry.Digest.from_hex("f" * 64)


def adapter(
    ref: str, base: registry.Digest = TINY, *, quarantined: bool = False, removed: bool = False
) -> AdapterVersion:
    name, version = ref.split("@")
    return AdapterVersion(
        name=name,
        version=int(version),
        digest=registry.Digest.from_hex(f"{int(version):x}" * 64),
        base_model=Lineage("tiny-llama", base),
        dataset=Lineage(None, None),
        peft=PeftSummary(4, 8.0, ("q_proj",), 0.0),
        schema=None,
        aliases=(),
        meta={},
        created_by="t",
        created_at="",
        removed_at="2026-12-01" if removed else None,
        quarantine=Quarantine("blanks the engine", "gw", "2026-12-01") if quarantined else None,
    )


def variant(
    name: str, digest: registry.Digest, parent: registry.Digest = TINY, method: str = "fp8"
) -> VariantInfo:
    return VariantInfo(
        name=name,
        digest=digest,
        parent="tiny-llama",
        parent_digest=parent,
        quantization={"method": method},
        fidelity={},
        passed=True,
        forced=False,
    )


def result(ref: str, on: str, digest: registry.Digest, passed: bool = True) -> PairResult:
    return PairResult(
        adapter=ref,
        adapter_digest=registry.Digest.from_hex("1" * 64),
        variant=on,
        variant_digest=digest,
        passed=passed,
        failed_gates=() if passed else ("task_score",),
        figures={},
        evaluated_at="",
    )


V_FP8 = variant("tiny-llama-fp8", FP8)
V_GPTQ = variant("tiny-llama-gptq", GPTQ, method="gptq")
V_MERGED = variant("support-v1-1-merged", MERGED, method="merge")
V_ELSEWHERE = variant("other-fp8", FP8, parent=OTHER)


def P(ref: str, on: str) -> PendingPair:
    return PendingPair(ref, on)


CASES = [
    pytest.param([], [V_FP8], [], [], id="no adapters: nothing waits"),
    pytest.param([adapter("a@1")], [], [], [], id="no variants: nothing waits"),
    pytest.param(
        [adapter("a@1")], [V_FP8], [], [P("a@1", "tiny-llama-fp8")], id="one unmeasured pair"
    ),
    pytest.param(
        [adapter("a@1")],
        [V_FP8],
        [result("a@1", "tiny-llama-fp8", FP8)],
        [],
        id="a passed result counts",
    ),
    pytest.param(
        [adapter("a@1")],
        [V_FP8],
        [result("a@1", "tiny-llama-fp8", FP8, passed=False)],
        [],
        id="a failed result counts too (measured; re-measure by name)",
    ),
    pytest.param(
        [adapter("a@1")],
        [V_FP8],
        [result("a@1", "tiny-llama-fp8", FP8_REMADE)],
        [P("a@1", "tiny-llama-fp8")],
        id="a result on other weights of the same variant name does not count",
    ),
    pytest.param(
        [adapter("a@1")],
        [V_FP8],
        [result("a@2", "tiny-llama-fp8", FP8)],
        [P("a@1", "tiny-llama-fp8")],
        id="another version's result does not count",
    ),
    pytest.param([adapter("a@1")], [V_MERGED], [], [], id="a merged deployment takes no adapters"),
    pytest.param(
        [adapter("a@1", base=OTHER)],
        [V_FP8],
        [],
        [],
        id="an adapter of another base has no pair with this variant",
    ),
    pytest.param(
        [adapter("a@1", quarantined=True)], [V_FP8], [], [], id="a quarantined version waits not"
    ),
    pytest.param([adapter("a@1", removed=True)], [V_FP8], [], [], id="a removed version"),
    pytest.param(
        [adapter("b@1"), adapter("a@10"), adapter("a@2"), adapter("c@1", base=OTHER)],
        [V_GPTQ, V_ELSEWHERE, V_FP8, V_MERGED],
        [result("a@2", "tiny-llama-gptq", GPTQ)],
        [
            P("c@1", "other-fp8"),
            P("a@2", "tiny-llama-fp8"),
            P("a@10", "tiny-llama-fp8"),
            P("b@1", "tiny-llama-fp8"),
            P("a@10", "tiny-llama-gptq"),
            P("b@1", "tiny-llama-gptq"),
        ],
        id="several: by variant, then name and version number",
    ),
]


@pytest.mark.parametrize(("adapters", "variants", "measured", "expected"), CASES)
def test_pending_pairs(
    adapters: list[AdapterVersion],
    variants: list[VariantInfo],
    measured: list[PairResult],
    expected: list[PendingPair],
) -> None:
    assert pending_pairs(adapters, variants, measured) == expected


def test_the_rule_read_from_a_registry(
    reg: LocalRegistry, tmp_path: Path, make_adapter: Callable[..., Path]
) -> None:
    """pending_in / pending_for on a real directory registry: a variant registered with one
    pair recorded leaves the other versions waiting; a quarantined one waits not; recording
    the rest empties the list."""
    for seed, name in enumerate(("support", "support", "extract", "broken")):
        reg.push_adapter(make_adapter(name, seed=seed), dataset="support-data")
    reg.quarantine("broken@1", reason="blanks the engine")
    reg.add_variant(
        write_base(tmp_path / "fp8", random=True),
        name="tiny-base-fp8",
        parent="tiny-base",
        quantization={"method": "fp8"},
        fidelity={},
        passed=True,
        forced=False,
        pairs=[registry.PairInput("support@1", True, (), {})],
    )
    waiting = [PendingPair("extract@1", "tiny-base-fp8"), PendingPair("support@2", "tiny-base-fp8")]
    assert pending_in(reg) == waiting
    assert pending_in(reg, []) == []
    assert pending_for(reg, reg.adapter("support@1")) == []
    assert pending_for(reg, reg.adapter("support@2")) == [waiting[1]]
    reg.record_pairs("tiny-base-fp8", [registry.PairInput("extract@1", False, ("x",), {})])
    reg.record_pairs("tiny-base-fp8", [registry.PairInput("support@2", True, (), {})])
    assert pending_in(reg) == []
