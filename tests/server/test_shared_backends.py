"""Several gateways in front of the same backends (server/backend_sync.py).

The arithmetic and the LRU bookkeeping are table tests; the rest runs two real
`gateway serve` processes in front of real backend processes (bench/instant_backend.py,
which speaks vLLM's HTTP API: `/v1/models` lists the adapters it holds, unknown models get
vLLM's 404, `/metrics` counts what it runs and has answered), so they run everywhere; one
(marked `vllm`) runs two gateways in front of the session's real vLLM.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from server.backend_sync import others_in_flight
from server.supervisor import free_port
from server.vllm_http import EngineStats, parse_engine_stats
from tests.conftest import ADAPTERS, BASE_NAME, TEST_DTYPE
from tests.server.conftest import scrape, wait_until
from tests.server.test_adapters import MemoryBackend, hold, slots, target
from tests.server.test_scaleout import answered_by, ask, backends_ready, loras, tidy, unload
from tests.support import launch
from tests.support.launch import Process, settings_env

INSTANT = Path(__file__).resolve().parents[2] / "bench" / "instant_backend.py"
PLAIN = tuple(a for a in ADAPTERS if a != "extract")  # its schema refuses canned answers


def engine(running: float, waiting: float) -> EngineStats:
    return EngineStats(running=running, waiting=waiting, kv_cache_usage=0, generation_tokens=0)


@pytest.mark.parametrize(
    ("sample", "own", "others"),
    [
        (None, 3, 0),  # no sample (vLLM did not answer): nothing known of others
        (engine(0, 0), 0, 0),
        (engine(5, 0), 5, 0),  # all of vLLM's requests are ours
        (engine(5, 3), 2, 6),  # running and waiting both count
        (engine(1, 0), 4, 0),  # ours not at vLLM yet (loading an adapter): never below 0
        (engine(2.0, 1.0), 0, 3),  # Prometheus floats
    ],
)
def test_others_in_flight(sample: EngineStats | None, own: int, others: int) -> None:
    assert others_in_flight(sample, own) == others


def names(*short: str) -> set[str]:
    return {target(n).lora_name or "" for n in short}


def test_what_vllm_lists_counts_and_what_it_dropped_is_gone() -> None:
    """`observe`: adapters another gateway loaded are held (and the least recently used
    here); adapters vLLM no longer lists leave the LRU unless in use here."""

    async def run() -> None:
        backend = MemoryBackend()
        s = slots(backend, 3)
        await hold(s, target("mine"), 0)
        backend.held |= names("theirs")  # another gateway loaded it
        s.observe(set(backend.held), backend.state.generation)
        assert s.view(target("theirs").lora_name).holds
        assert s.view(None).free_slots == 1
        assert [n.split("@")[0] for n in s.loaded] == ["theirs", "mine"]

        await hold(s, target("new"), 0)  # 3 of 3: the next load evicts "theirs" first
        await hold(s, target("fourth"), 0)
        assert backend.held == names("mine", "new", "fourth")

        backend.held -= names("mine")  # the other gateway evicted one of ours
        s.observe(set(backend.held), backend.state.generation)
        assert not s.view(target("mine").lora_name).holds
        assert s.view(None).free_slots == 1

        busy = asyncio.create_task(hold(s, target("new"), 0.2))
        await asyncio.sleep(0.05)
        s.observe(set(), backend.state.generation)  # a request of ours uses "new": kept
        assert [n.split("@")[0] for n in s.loaded] == ["new"]
        await busy

        stale = backend.state.generation
        backend.state.restarted("gone")
        s.observe(names("theirs"), stale)  # asked of the server before its restart
        assert s.loaded == []

    asyncio.run(run())


def test_loading_an_adapter_another_gateway_loaded_evicts_nothing() -> None:
    """Between syncs: vLLM already holds the adapter a request wants (another gateway
    loaded it). The load finds it there and takes no slot of another adapter for it."""

    async def run() -> None:
        backend = MemoryBackend()
        s = slots(backend, 2)
        await hold(s, target("mine"), 0)
        backend.held |= names("theirs")
        await hold(s, target("theirs"), 0)
        assert backend.held == names("mine", "theirs")
        assert sorted(n.split("@")[0] for n in s.loaded) == ["mine", "theirs"]

    asyncio.run(run())


def test_others_in_flight_counts_for_routing() -> None:
    backend = MemoryBackend()
    backend.state.in_flight = 2
    backend.state.sampled(others_in_flight(engine(7, 1), 2))
    s = slots(backend, 1)
    assert s.view(None).in_flight == 8
    backend.state.restarted("gone")
    assert backend.state.others_in_flight == 0


@contextmanager
def instant(port: int, log: Path, delay_s: float = 0.0) -> Iterator[Process]:
    cmd = [sys.executable, str(INSTANT), str(port), "127.0.0.1", str(delay_s)]
    with launch.serving(cmd, port, log, "/health", dict(os.environ), 60) as proc:
        yield proc


def metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def answered(url: str) -> int:
    """Requests the backend has answered (the gateways' probes too)."""
    lines = metrics(url).splitlines()
    return int(
        float(next(x for x in lines if x.startswith("vllm:request_success_total")).split()[1])
    )


SYNC = settings_env(backends_sync_s=0.2, probe_interval_s=300)


def test_two_gateways_share_what_each_backend_holds(zoo_registry: Path, tmp_path: Path) -> None:
    """Gateway A fronts backends (b0, b1), gateway B the same in the other order (b1, b0),
    so each sends an adapter nobody holds to a different backend. An adapter A loaded on
    b0 is seen by B as held there: B routes to it instead of loading it on b1."""
    ports = (free_port(), free_port())
    b0, b1 = (f"http://127.0.0.1:{p}" for p in ports)
    with (
        instant(ports[0], tmp_path / "b0.log"),
        instant(ports[1], tmp_path / "b1.log"),
        launch.gateway(zoo_registry, tmp_path / "a", backend=(b0, b1), env=SYNC) as a,
        launch.gateway(zoo_registry, tmp_path / "b", backend=(b1, b0), env=SYNC) as b,
    ):
        assert wait_until(lambda: backends_ready(a.url) == backends_ready(b.url) == [True] * 2)
        assert ask(a.url, ADAPTERS[0]).status_code == 200
        assert {n.split("@")[0] for n in loras(b0)} == {ADAPTERS[0]} and not loras(b1)
        before = answered(b0)
        wait_until(lambda: False, 0.6)  # a few of B's syncs
        for _ in range(3):
            assert ask(b.url, ADAPTERS[0]).status_code == 200
        assert not loras(b1), "B loaded the adapter again instead of using b0's"
        assert answered(b0) == before + 3
        # And the other way round: B's cold adapter goes to b1 (its first), A follows it.
        assert ask(b.url, ADAPTERS[1]).status_code == 200
        assert {n.split("@")[0] for n in loras(b1)} == {ADAPTERS[1]}
        wait_until(lambda: False, 0.6)
        assert ask(a.url, ADAPTERS[1]).status_code == 200
        assert {n.split("@")[0] for n in loras(b0)} == {ADAPTERS[0]}


def test_the_lru_bound_counts_the_other_gateways_adapters_and_evictions_break_nothing(
    zoo_registry: Path, tmp_path: Path
) -> None:
    """One backend, two gateways, a bound of 2 adapters. B loads one, then A loads one
    (2 of 2 in vLLM). B's next adapter must evict one (vLLM never lists more than 2),
    though B itself loaded only one. Then each gateway asks for adapters the other evicted,
    and every request succeeds (an adapter gone behind a gateway's back is loaded again)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**SYNC, **settings_env(max_loaded_adapters=2)}
    with (
        instant(port, tmp_path / "b0.log"),
        launch.gateway(zoo_registry, tmp_path / "a", backend=url, env=env) as a,
        launch.gateway(zoo_registry, tmp_path / "b", backend=url, env=env) as b,
    ):
        assert ask(b.url, ADAPTERS[0]).status_code == 200
        assert ask(a.url, ADAPTERS[1]).status_code == 200
        assert len(loras(url)) == 2
        wait_until(lambda: False, 0.6)
        assert ask(b.url, PLAIN[2]).status_code == 200
        held = {n.split("@")[0] for n in loras(url)}
        assert len(held) == 2 and PLAIN[2] in held, held
        sequence = [(a, 0), (b, 1), (a, 2), (b, 0), (a, 1), (b, 2), (a, 0), (b, 1)]
        for gw, i in sequence:
            r = ask(gw.url, PLAIN[i])
            assert r.status_code == 200, r.text
            assert len(loras(url)) <= 2


def test_a_gateway_that_did_not_see_an_eviction_loads_the_adapter_again(
    zoo_registry: Path, tmp_path: Path
) -> None:
    """No syncing at all, a bound of 1: C's load evicts what A loaded behind A's back.
    A's next request for it gets vLLM's 404 and A loads it once more: still a 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = settings_env(backends_sync_s=0, max_loaded_adapters=1, probe_interval_s=300)
    with (
        instant(port, tmp_path / "b0.log"),
        launch.gateway(zoo_registry, tmp_path / "a", backend=url, env=env) as a,
        launch.gateway(zoo_registry, tmp_path / "c", backend=url, env=env) as c,
    ):
        assert ask(a.url, ADAPTERS[0]).status_code == 200
        assert ask(c.url, ADAPTERS[1]).status_code == 200
        assert {n.split("@")[0] for n in loras(url)} == {ADAPTERS[1]}
        r = ask(a.url, ADAPTERS[0])
        assert r.status_code == 200, r.text
        assert ADAPTERS[0] in {n.split("@")[0] for n in loras(url)}
        loads = scrape(a.url, "loraport_adapter_loads_total", adapter=ADAPTERS[0], result="ok")
        assert loads == 2  # once at first, once after vLLM's 404


def test_requests_of_another_gateway_count_as_in_flight(zoo_registry: Path, tmp_path: Path) -> None:
    """A fronts b0 only; B fronts (b0, b1). While A has requests running on b0, B sends
    its base-model request to b1, which looks less busy only through b0's /metrics (to B
    alone both are idle, and a tie goes to b0)."""
    ports = (free_port(), free_port())
    b0, b1 = (f"http://127.0.0.1:{p}" for p in ports)
    with (
        instant(ports[0], tmp_path / "b0.log", delay_s=3.0),
        instant(ports[1], tmp_path / "b1.log", delay_s=0.0),
        launch.gateway(zoo_registry, tmp_path / "a", backend=b0, env=SYNC) as a,
        launch.gateway(zoo_registry, tmp_path / "b", backend=(b0, b1), env=SYNC) as b,
        ThreadPoolExecutor(4) as pool,
    ):
        assert wait_until(lambda: backends_ready(b.url) == [True, True], 30)
        assert wait_until(lambda: answered(b0) == 2, 30)  # both gateways' first probes
        wait_until(lambda: False, 0.6)
        first = answered(b0), answered(b1)
        assert ask(b.url, BASE_NAME).status_code == 200  # idle: the tie goes to b0 ...
        assert (answered(b0), answered(b1)) == (first[0] + 1, first[1])
        busy = [pool.submit(ask, a.url, BASE_NAME) for _ in range(3)]
        assert wait_until(lambda: parse_engine_stats(metrics(b0)).running == 3, 10)
        wait_until(lambda: False, 0.6)
        assert ask(b.url, BASE_NAME).status_code == 200  # ... but b0 runs A's 3 now
        assert answered(b1) == first[1] + 1
        assert [f.result().status_code for f in busy] == [200] * 3


@pytest.mark.vllm
def test_two_gateways_in_front_of_the_real_vllm(
    vllm_server: str, zoo_registry: Path, tmp_path: Path
) -> None:
    """The same against the session's real vLLM (its `/v1/models` and its 404): gateway A
    fronts (vLLM, instant), B (instant, vLLM). An adapter A loaded on vLLM is served by B
    from vLLM too (B alone would load it on the instant backend, its first). Then vLLM
    loses it behind A's back (another gateway's eviction; A does not sync here): A's next
    request gets vLLM's 404, A loads it once more, and the client gets a 200."""
    port = free_port()
    second = f"http://127.0.0.1:{port}"
    common = {"GATEWAY_LOCAL__DTYPE": TEST_DTYPE, **settings_env(probe_interval_s=300)}
    env_a = {**common, **settings_env(backends_sync_s=0)}
    env_b = {**common, **settings_env(backends_sync_s=0.2)}
    adapter = PLAIN[0]
    with (
        tidy(vllm_server, (adapter,)),
        instant(port, tmp_path / "instant.log"),
        launch.gateway(zoo_registry, tmp_path / "a", backend=(vllm_server, second), env=env_a) as a,
        launch.gateway(zoo_registry, tmp_path / "b", backend=(second, vllm_server), env=env_b) as b,
    ):
        assert wait_until(lambda: backends_ready(a.url) == backends_ready(b.url) == [True] * 2)
        first = ask(a.url, adapter)
        assert first.status_code == 200 and answered_by(first) != "chatcmpl-instant", first.text
        assert adapter in {n.split("@")[0] for n in loras(vllm_server)}
        wait_until(lambda: False, 1.0)  # a few of B's syncs
        shared = ask(b.url, adapter)
        assert shared.status_code == 200 and answered_by(shared) != "chatcmpl-instant"
        assert not loras(second), "B loaded the adapter on its first backend instead"

        unload(vllm_server, {n for n in loras(vllm_server) if n.split("@")[0] == adapter})
        again = ask(a.url, adapter)
        assert again.status_code == 200 and answered_by(again) != "chatcmpl-instant", again.text
        loads = scrape(a.url, "loraport_adapter_loads_total", adapter=adapter, result="ok")
        assert loads == 2  # once at first, once after vLLM's 404
