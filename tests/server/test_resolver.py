"""Route resolution against a real registry (no vLLM): client input never grows a cache,
every spelling of a ref but the canonical one is a 400, and on a variant only the pairs
that passed their gate serve."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import registry
from server import resolver as resolver_module
from server.errors import GatewayError
from server.resolver import Resolver
from tests.support.synthetic import write_adapter, write_base
from tests.support.zoo import BASE_NAME


def resolve_all(
    location: Path, models: list[str], base: str = BASE_NAME
) -> tuple[list[str], int, list[str]]:
    """The outcome of each model string (a ref, or an error code), the cache's size, and
    the ids /v1/models would list."""

    async def run() -> tuple[list[str], int, list[str]]:
        r = Resolver(str(location))
        await r.open(base)
        out = []
        try:
            for m in models:
                try:
                    out.append((await r.resolve(m)).ref)
                except GatewayError as e:
                    out.append(str(e.code))
            return out, len(r._cache), [i for i, _ in await r.model_ids()]
        finally:
            await r.close()

    return asyncio.run(run())


def test_only_canonical_spellings_resolve(zoo_registry: Path) -> None:
    spellings = ["extract@01", "extract@\u0661", "extract@\uff11", "extract@\u00b2",
                 " extract ", "extract\n", "extract@99999999999999999999999"]  # fmt: skip
    out, cached, _ = resolve_all(zoo_registry, ["extract@1", "extract", *spellings])
    assert out[:2] == ["extract@1", "extract@1"]
    assert out[2:] == ["invalid_model_ref"] * len(spellings)
    assert cached == 2  # only the two canonical refs that resolved


def test_distinct_spellings_cannot_grow_the_route_cache(
    zoo_registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30,000 spellings of extract@1 once took the gateway from 139 to 391 MiB."""
    monkeypatch.setattr(resolver_module, "ROUTE_CACHE_SIZE", 3)
    spellings = [" " * j + "extract@" + "0" * k + "1" for j in range(40) for k in range(40)]
    refs = ["extract@1", "extract", "extract@production", "triage", "triage@1", BASE_NAME]
    out, cached, _ = resolve_all(zoo_registry, spellings + [f"nope-{i}" for i in range(500)] + refs)
    assert out.count("invalid_model_ref") == len(spellings) - 1  # all but "extract@1"
    assert out.count("model_not_found") == 500
    assert cached == 3  # the bound holds even for refs that did resolve


def test_on_a_variant_only_pairs_that_passed_serve(tmp_path: Path) -> None:
    """Adapters of the variant's parent: a passed pair resolves and is listed, a failed one
    and one never evaluated are refused with their own codes and not listed."""
    location = tmp_path / "reg"
    with registry.open(location) as reg:
        reg.add_base(write_base(tmp_path / "base"), name="tiny-base")
        for seed, name in enumerate(["good", "bad", "late"]):
            reg.push_adapter(write_adapter(tmp_path / name, seed=seed), name=name,
                             base="tiny-base", allow_unknown_dataset=True)  # fmt: skip
        pairs = [registry.PairInput("good@1", True, (), {}),
                 registry.PairInput("bad@1", False, ("task_score",), {})]  # fmt: skip
        reg.add_variant(write_base(tmp_path / "fp8", random=True), name="tiny-base-fp8",
                        parent="tiny-base", quantization={"method": "fp8"}, fidelity={},
                        passed=True, forced=False, pairs=pairs)  # fmt: skip
    out, _, listed = resolve_all(location, ["good", "bad", "late"], base="tiny-base-fp8")
    assert out == ["good@1", "variant_gate_failed", "variant_pair_not_evaluated"]
    assert listed == ["tiny-base-fp8", "good", "good@1", "good@production"]
