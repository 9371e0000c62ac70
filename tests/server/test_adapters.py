"""AdapterSlots' bookkeeping (pure logic) with an in-memory backend; the real thing is
tested against vLLM in test_lru.py and test_serving.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from registry import AdapterVersion, BaseModel, Lineage, PeftSummary
from server.adapters import AdapterSlots
from server.errors import BackendError
from server.metrics import Metrics
from server.resolver import Target
from server.vllm_http import BackendState


class MemoryBackend:
    """Holds adapter names like vLLM does; loads take a little time."""

    def __init__(self) -> None:
        self.label = "mem"
        self.state = BackendState(up=True, model_id="base")
        self.held: set[str] = set()
        self.fail_unload = False

    async def load_lora(self, name: str, path: str) -> None:
        await asyncio.sleep(0.01)
        self.held.add(name)

    async def unload_lora(self, name: str) -> None:
        if self.fail_unload:
            raise BackendError("unload timed out")
        self.held.discard(name)

    async def lora_names(self) -> set[str]:
        return set(self.held)


class PathCache:
    async def path(self, target: Target) -> Path:
        return Path("/cache") / target.digest_hex


def target(name: str) -> Target:
    base = BaseModel(
        name="base",
        digest="sha256:" + "0" * 64,
        architecture={},
        license=None,
        parent=None,
        quantization=None,
        created_at="",
    )  # type: ignore[call-arg]
    adapter = AdapterVersion(  # type: ignore[call-arg]
        name=name,
        version=1,
        digest="sha256:" + name.encode().hex().ljust(64, "0"),
        base_model=Lineage("base", base.digest),
        dataset=Lineage(None, None),
        peft=PeftSummary(8, 16, ("q_proj",), 0.0),
        schema=None,
        aliases=(),
        meta={},
        created_by="t",
        created_at="",
    )
    return Target(base, adapter)


def slots(backend: MemoryBackend, capacity: int) -> AdapterSlots:
    return AdapterSlots(backend, PathCache(), capacity, Metrics())  # type: ignore[arg-type]


async def hold(s: AdapterSlots, t: Target, seconds: float) -> str:
    async with s.use(t) as name:
        await asyncio.sleep(seconds)
        return name


def test_a_fresh_load_is_not_evicted_by_the_load_behind_it() -> None:
    async def run() -> list[str]:
        backend = MemoryBackend()
        s = slots(backend, 1)
        x, y = target("x"), target("y")

        async def use_and_check(t: Target) -> str:
            async with s.use(t) as name:
                assert name in backend.held, f"{name} was evicted before use"
                await asyncio.sleep(0.02)
                return name

        return await asyncio.gather(use_and_check(x), use_and_check(y), return_exceptions=True)  # type: ignore[return-value]

    results = asyncio.run(run())
    assert any(isinstance(r, str) for r in results)
    assert not any(isinstance(r, AssertionError) for r in results), results


def test_lru_order_and_capacity() -> None:
    async def run() -> tuple[list[str], set[str]]:
        backend = MemoryBackend()
        s = slots(backend, 2)
        for n in ("a", "b", "a", "c"):  # b is least recently used when c arrives
            await hold(s, target(n), 0)
        return [n.split("@")[0] for n in s.loaded], {n.split("@")[0] for n in backend.held}

    loaded, held = asyncio.run(run())
    assert loaded == ["a", "c"] and held == {"a", "c"}


def test_a_failed_unload_keeps_the_adapter_counted() -> None:
    async def run() -> Any:
        backend = MemoryBackend()
        s = slots(backend, 1)
        await hold(s, target("a"), 0)
        backend.fail_unload = True
        with pytest.raises(BackendError):
            await hold(s, target("b"), 0)
        return [n.split("@")[0] for n in s.loaded], backend.held

    loaded, held = asyncio.run(run())
    assert loaded == ["a"] and len(held) == 1  # nothing leaked: what vLLM holds is counted


def test_loads_are_shared_by_concurrent_first_requests() -> None:
    async def run() -> int:
        backend = MemoryBackend()
        calls = 0
        original = backend.load_lora

        async def counting(name: str, path: str) -> None:
            nonlocal calls
            calls += 1
            await original(name, path)

        backend.load_lora = counting  # type: ignore[method-assign]
        s = slots(backend, 4)
        await asyncio.gather(*(hold(s, target("a"), 0.01) for _ in range(8)))
        return calls

    assert asyncio.run(run()) == 1
