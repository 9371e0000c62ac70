"""bench/hop_floor.py's three forwarders, which bench/gateway_rounds.py --hop puts in front
of real vLLM: each, run as the bench runs it, passes requests to a real HTTP backend
(bench/instant_backend.py) and its answers back, on one kept-alive connection and on
several at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.support.bench import bench_module

BODY = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def floor() -> ModuleType:
    return bench_module("hop_floor")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    harness = bench_module("harness")
    log = tmp_path_factory.mktemp("instant") / "instant.log"
    with harness.instant_backend(log) as v:
        yield v.url


@pytest.mark.parametrize("kind", ["raw", "raw+json", "asgi"])
def test_a_hop_forwards_requests_and_answers(
    floor: ModuleType, backend: str, kind: str, tmp_path: Path
) -> None:
    direct = httpx.post(f"{backend}/v1/chat/completions", json=BODY, timeout=10).json()
    probe = json.dumps(BODY).encode()
    with floor.hop(kind, backend, tmp_path / "hop.log", probe) as (url, proc):
        with httpx.Client(base_url=url, timeout=10) as client:  # one kept-alive connection
            answers = [client.post("/v1/chat/completions", json=BODY) for _ in range(3)]
        assert [r.status_code for r in answers] == [200] * 3
        for r in answers:
            got = r.json()
            assert got["choices"] == direct["choices"] and got["usage"] == direct["usage"]

        async def many() -> list[int]:
            async with httpx.AsyncClient(base_url=url, timeout=10) as c:
                rs = await asyncio.gather(
                    *(c.post("/v1/chat/completions", json=BODY) for _ in range(16))
                )
            return [r.status_code for r in rs]

        assert asyncio.run(many()) == [200] * 16
        assert proc.is_running()
    assert not proc.is_running()  # the hop is gone after the block
