"""A gateway in front of two backends, one of which is killed -9 mid-test.

Backend 0 is the session's real vLLM server; backend 1 is a real second process,
bench/instant_backend.py (a second vLLM would not fit beside the first on two cores: it
speaks vLLM's HTTP API, answers at once and tags its answers' id `chatcmpl-instant`, so
a test can see which backend answered). After the kill, requests for the base model and
for adapters keep succeeding (those that picked the dead backend are sent again to the
live one), `/ready` stays 200, and the backend is used again once it is back.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from server.supervisor import free_port
from tests.conftest import ADAPTERS, BASE_NAME, TEST_DTYPE
from tests.server.conftest import scrape, wait_until
from tests.support import launch
from tests.support.launch import Process, settings_env

INSTANT = Path(__file__).resolve().parents[2] / "bench" / "instant_backend.py"
MODELS = (BASE_NAME, ADAPTERS[0], BASE_NAME, ADAPTERS[1])


@contextmanager
def instant(port: int, log: Path) -> Iterator[Process]:
    cmd = [sys.executable, str(INSTANT), str(port)]
    with launch.serving(cmd, port, log, "/health", dict(os.environ), 60) as proc:
        yield proc


def loras(vllm_url: str) -> set[str]:
    data = httpx.get(f"{vllm_url}/v1/models", timeout=10).json()["data"]
    return {str(m["id"]) for m in data if m.get("parent")}


def unload(vllm_url: str, names: set[str]) -> None:
    for name in names:
        httpx.post(f"{vllm_url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=30)


@contextmanager
def tidy(vllm_url: str, unheld: tuple[str, ...]) -> Iterator[None]:
    """The session's vLLM without the adapters `unheld` (earlier tests' gateways leave
    theirs loaded, and a new gateway takes over what vLLM holds); afterwards, without
    any it did not hold before (later tests count what it holds)."""
    unload(vllm_url, {n for n in loras(vllm_url) if n.split("@")[0] in unheld})
    before = loras(vllm_url)
    try:
        yield
    finally:
        unload(vllm_url, loras(vllm_url) - before)


def ask(url: str, model: str, stream: bool = False) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        timeout=120,
        json={
            "model": model,
            "messages": [{"role": "user", "content": "Where is my order?"}],
            "max_tokens": 4,
            "temperature": 0,
            "stream": stream,
        },
    )


def burst(url: str, n: int, streams: bool = False) -> list[httpx.Response]:
    """n requests at once, base model and adapters mixed (every other one streamed)."""
    with ThreadPoolExecutor(n) as pool:
        return list(
            pool.map(lambda i: ask(url, MODELS[i % len(MODELS)], streams and i % 2 == 1), range(n))
        )


def answered_by(r: httpx.Response) -> str:
    """The answer's id (`chatcmpl-instant`: backend 1), unary or streamed; a streamed
    answer must have ended well."""
    if not r.headers["content-type"].startswith("text/event-stream"):
        return str(r.json()["id"])
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and '"error"' not in r.text, r.text
    return str(json.loads(events[0])["id"])


def spread_adapters(url: str) -> None:
    """Backend 0 loads one adapter, so the next adapter nobody holds goes where more LRU
    slots are free: backend 1, which then holds it (its requests go there first)."""
    assert ask(url, ADAPTERS[0]).status_code == 200
    held = ask(url, ADAPTERS[1])
    assert held.status_code == 200 and answered_by(held) == "chatcmpl-instant", held.text


def backends_ready(url: str) -> list[bool]:
    r = httpx.get(f"{url}/ready", timeout=10)
    return [b["ready"] for b in r.json()["backends"]]


@pytest.mark.vllm
def test_a_killed_backend_loses_nothing_but_its_in_flight_requests(
    vllm_server: str, zoo_registry: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "GATEWAY_LOCAL__DTYPE": TEST_DTYPE,
        # Only a request can notice the kill in this test's seconds: no probe round
        # between the kill and the burst after it (one round runs as soon as a request
        # finds the backend gone, and every second until it is back).
        **settings_env(probe_interval_s=300, spread_in_flight=2),
    }
    backends = (vllm_server, f"http://127.0.0.1:{port}")
    with (
        tidy(vllm_server, (ADAPTERS[1], ADAPTERS[3])),
        instant(port, tmp_path / "instant-1.log") as second,
        launch.gateway(zoo_registry, tmp_path / "cache", backend=backends, env=env) as gw,
    ):
        assert wait_until(lambda: backends_ready(gw.url) == [True, True], 60)
        spread_adapters(gw.url)
        before = burst(gw.url, 8)
        assert [r.status_code for r in before] == [200] * 8, [r.text for r in before]

        os.killpg(second.popen.pid, signal.SIGKILL)
        second.popen.wait()

        after = burst(gw.url, 8, streams=True)
        assert [r.status_code for r in after] == [200] * 8, [r.text for r in after]
        assert all(answered_by(r) != "chatcmpl-instant" for r in after)
        assert scrape(gw.url, "loraport_requests_rerouted_total", backend="1") >= 1
        ready = httpx.get(f"{gw.url}/ready", timeout=10)
        assert ready.status_code == 200
        assert backends_ready(gw.url) == [True, False]
        assert scrape(gw.url, "loraport_backend_up", backend="1") == 0

        with instant(port, tmp_path / "instant-2.log"):
            assert wait_until(lambda: backends_ready(gw.url) == [True, True], 30)
            # Used again: an adapter nobody holds goes where most LRU slots are free (the
            # restarted backend's are all free; vLLM holds the adapters rerouted to it).
            cold = ask(gw.url, ADAPTERS[3])
            assert cold.status_code == 200 and answered_by(cold) == "chatcmpl-instant", cold.text
            again = burst(gw.url, 8)
            assert [r.status_code for r in again] == [200] * 8, [r.text for r in again]


def test_requests_never_sent_to_a_dead_backend_go_to_a_live_one(
    zoo_registry: Path, tmp_path: Path
) -> None:
    """The same without vLLM (so it runs everywhere): two instant backends, one killed
    -9. Every request after the kill is answered by the other, the dead one is out of
    `/ready`'s list of ready backends at once, and back once it answers again."""
    ports = (free_port(), free_port())
    env = settings_env(probe_interval_s=300)
    backends = tuple(f"http://127.0.0.1:{p}" for p in ports)
    with (
        instant(ports[0], tmp_path / "a.log"),
        instant(ports[1], tmp_path / "b.log") as second,
        launch.gateway(zoo_registry, tmp_path / "cache", backend=backends, env=env) as gw,
    ):
        assert wait_until(lambda: backends_ready(gw.url) == [True, True], 30)
        spread_adapters(gw.url)
        os.killpg(second.popen.pid, signal.SIGKILL)
        second.popen.wait()
        after = burst(gw.url, 16)
        assert [r.status_code for r in after] == [200] * 16, [r.text for r in after]
        assert scrape(gw.url, "loraport_requests_rerouted_total", backend="1") >= 1
        assert httpx.get(f"{gw.url}/ready", timeout=10).status_code == 200
        assert backends_ready(gw.url) == [True, False]
        with instant(ports[1], tmp_path / "b2.log"):
            assert wait_until(lambda: backends_ready(gw.url) == [True, True], 30)
            rerouted = scrape(gw.url, "loraport_requests_rerouted_total", backend="1")
            again = burst(gw.url, 16)
            assert [r.status_code for r in again] == [200] * 16, [r.text for r in again]
            assert scrape(gw.url, "loraport_requests_rerouted_total", backend="1") == rerouted
            # Used again: an adapter nobody holds goes to its empty LRU.
            assert ask(gw.url, ADAPTERS[3]).status_code == 200
            held = httpx.get(f"{backends[1]}/v1/models", timeout=10).json()["data"]
            assert any(ADAPTERS[3] in m["id"] for m in held if m["parent"]), held
