"""Route resolution against a real registry (no vLLM): client input never grows a cache,
and every spelling of a ref but the canonical one is a 400."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server import resolver as resolver_module
from server.errors import GatewayError
from server.resolver import Resolver
from tests.support.zoo import BASE_NAME


def resolve_all(location: Path, models: list[str]) -> tuple[list[str], int]:
    """The outcome of each model string (a ref, or an error code), and the cache's size."""

    async def run() -> tuple[list[str], int]:
        r = Resolver(str(location))
        await r.open(BASE_NAME)
        out = []
        try:
            for m in models:
                try:
                    out.append((await r.resolve(m)).ref)
                except GatewayError as e:
                    out.append(str(e.code))
            return out, len(r._cache)
        finally:
            await r.close()

    return asyncio.run(run())


def test_only_canonical_spellings_resolve(zoo_registry: Path) -> None:
    spellings = ["extract@01", "extract@\u0661", "extract@\uff11", "extract@\u00b2",
                 " extract ", "extract\n", "extract@99999999999999999999999"]  # fmt: skip
    out, cached = resolve_all(zoo_registry, ["extract@1", "extract", *spellings])
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
    out, cached = resolve_all(zoo_registry, spellings + [f"nope-{i}" for i in range(500)] + refs)
    assert out.count("invalid_model_ref") == len(spellings) - 1  # all but "extract@1"
    assert out.count("model_not_found") == 500
    assert cached == 3  # the bound holds even for refs that did resolve
