"""Backends named by one DNS name, resolved again while serving (server/backend_dns.py).

Pure parts are table tests. The rest runs a real gateway (uvicorn, the real app) in front
of real backend processes (bench/instant_backend.py) bound to two loopback addresses on
one port, 127.0.0.1 and 127.0.0.2, as a headless Service gives pod IPs on one port. A
test cannot change what the machine's DNS answers (no root, and `localhost` resolves
to 127.0.0.1 only here), so that gateway runs in this process with its resolver given
to `create_app`; it then drops one address and adds it back. The getaddrinfo path itself
runs in a real `gateway serve --backends-dns http://localhost:PORT` process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from server.app import create_app
from server.backend_dns import Change, Name, diff, getaddrinfo, resolve
from server.settings import GatewaySettings
from server.supervisor import free_port
from tests.conftest import ADAPTERS, BASE_NAME
from tests.server.conftest import scrape, wait_until
from tests.server.test_scaleout import ask
from tests.support import launch
from tests.support.launch import Process, settings_env

INSTANT = Path(__file__).resolve().parents[2] / "bench" / "instant_backend.py"


@pytest.mark.parametrize(
    ("old", "new", "joined", "left"),
    [
        ([], [], (), ()),
        ([], ["10.0.0.1", "10.0.0.2"], ("10.0.0.1", "10.0.0.2"), ()),
        (["10.0.0.1", "10.0.0.2"], ["10.0.0.2", "10.0.0.1"], (), ()),  # order is no change
        (["10.0.0.1", "10.0.0.2"], ["10.0.0.2", "10.0.0.3"], ("10.0.0.3",), ("10.0.0.1",)),
        (["10.0.0.1"], [], (), ("10.0.0.1",)),
        (["10.0.0.1"], ["10.0.0.1", "10.0.0.1", "fd00::1"], ("fd00::1",), ()),  # duplicates
    ],
)
def test_diff(
    old: list[str], new: list[str], joined: tuple[str, ...], left: tuple[str, ...]
) -> None:
    change = diff(old, new)
    assert change == Change(joined, left)
    assert bool(change) == bool(joined or left)


@pytest.mark.parametrize(
    ("url", "address", "backend"),
    [
        ("http://vllm-headless:8000", "10.1.2.3", "http://10.1.2.3:8000"),
        ("http://vllm-headless:8000/", "fd00::7", "http://[fd00::7]:8000"),
        ("http://vllm", "10.1.2.3", "http://10.1.2.3:80"),
        ("https://vllm.ns.svc.cluster.local", "10.1.2.3", "https://10.1.2.3:443"),
        ("http://vllm:8000/prefix/", "10.1.2.3", "http://10.1.2.3:8000/prefix"),
    ],
)
def test_each_address_is_one_backend_url(url: str, address: str, backend: str) -> None:
    assert Name.parse(url).url_of(address) == backend


@pytest.mark.parametrize("url", ["vllm-headless:8000", "ftp://vllm:21", "http://:8000"])
def test_a_name_must_be_an_http_url_with_a_host(url: str) -> None:
    with pytest.raises(ValueError, match="backends_dns"):
        Name.parse(url)


def test_a_bad_name_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match="backends_dns must be an http"):
        GatewaySettings(backends_dns="vllm-headless:8000")


def test_backends_and_backends_dns_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        GatewaySettings(backends=("http://a:8000",), backends_dns="http://b:8000")


def test_a_failed_resolution_changes_nothing() -> None:
    async def no_such_name(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    name = Name.parse("http://vllm-headless.invalid:8000")
    assert asyncio.run(resolve(name, no_such_name)) is None
    assert asyncio.run(resolve(Name.parse("http://localhost:8000"), getaddrinfo)) == ["127.0.0.1"]


@contextmanager
def instant(host: str, port: int, log: Path, delay_s: float = 0.0) -> Iterator[Process]:
    cmd = [sys.executable, str(INSTANT), str(port), host, str(delay_s)]
    with log.open("wb") as out:
        popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc = Process(f"http://{host}:{port}", popen, log)
    try:
        launch.wait_for(proc.url + "/health", 60, popen)
        yield proc
    finally:
        proc.stop()


@contextmanager
def in_process_gateway(
    settings: GatewaySettings, addresses: list[str], ready: str = "/ready"
) -> Iterator[str]:
    """A real gateway app under uvicorn, in a thread; `backends_dns` resolves to whatever
    `addresses` holds when asked (the test changes it; empty: the name does not resolve).
    Waits for `ready` to answer 200."""

    async def resolver(host: str, port: int) -> list[str]:
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(addresses)

    config = uvicorn.Config(
        create_app(settings, resolve=resolver),
        host=settings.host,
        port=settings.port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{settings.host}:{settings.port}"
    try:
        launch.wait_for(url + ready, 60)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def ready_backends(url: str) -> dict[str, bool]:
    body = httpx.get(f"{url}/ready", timeout=10).json()
    return {b["backend"]: b["ready"] for b in body["backends"]}


def held(url: str) -> set[str]:
    data = httpx.get(f"{url}/v1/models", timeout=10).json()["data"]
    return {str(m["id"]).split("@")[0] for m in data if m.get("parent")}


def answered(url: str) -> int:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return int(
        float(next(x for x in lines if x.startswith("vllm:request_success_total")).split()[1])
    )


def test_backends_follow_the_name(zoo_registry: Path, tmp_path: Path) -> None:
    """Both addresses serve; one vanishes while a request runs on it (the request ends
    well, no new one goes there); it comes back and is used again."""
    port = free_port()
    addresses = ["127.0.0.1", "127.0.0.2"]
    settings = GatewaySettings(
        registry=str(zoo_registry),
        base=BASE_NAME,
        port=free_port(),
        cache_dir=tmp_path / "cache",
        backends_dns=f"http://vllm-headless.test:{port}",
        backends_dns_refresh_s=0.2,
        backends_sync_s=0.2,
        probe_interval_s=300,
    )
    with (
        instant("127.0.0.1", port, tmp_path / "one.log") as one,
        instant("127.0.0.2", port, tmp_path / "two.log", delay_s=3.0) as two,
        in_process_gateway(settings, addresses) as gw,
        ThreadPoolExecutor(1) as pool,
    ):
        both = {"127.0.0.1": True, "127.0.0.2": True}
        assert wait_until(lambda: ready_backends(gw) == both, 30)
        # Ready once it answers /v1/models; its first probe's generation (3 s) is load
        # there, which the gateway counts as in flight (vLLM's /metrics) until it ends.
        assert wait_until(lambda: not busy(two.url), 10)
        wait_until(lambda: False, 0.6)
        assert ask(gw, ADAPTERS[0]).status_code == 200  # a tie: the first address
        assert ask(gw, ADAPTERS[1]).status_code == 200  # the one with more free slots
        assert held(one.url) == {ADAPTERS[0]} and held(two.url) == {ADAPTERS[1]}

        running = pool.submit(ask, gw, ADAPTERS[1])  # to its holder, 3 s there
        assert wait_until(lambda: busy(two.url), 5)
        addresses.remove("127.0.0.2")
        assert wait_until(lambda: ready_backends(gw) == {"127.0.0.1": True}, 5)
        assert busy(two.url), "the address left only after its request ended: too slow to tell"
        assert running.result().status_code == 200
        assert scrape(gw, "loraport_backend_up", backend="127.0.0.2") == 0

        before = answered(two.url)
        for model in (ADAPTERS[1], BASE_NAME, ADAPTERS[0], ADAPTERS[1]):
            assert ask(gw, model).status_code == 200
        assert answered(two.url) == before
        assert held(one.url) == {ADAPTERS[0], ADAPTERS[1]}  # loaded where it now goes

        addresses.append("127.0.0.2")
        assert wait_until(lambda: ready_backends(gw) == both, 30)
        assert answered(two.url) == before + 1  # a joining backend is probed before use
        wait_until(lambda: False, 0.6)
        assert ask(gw, ADAPTERS[3]).status_code == 200  # nobody holds it: most free slots
        assert ADAPTERS[3] in held(two.url)


def test_a_name_that_resolves_only_later(zoo_registry: Path, tmp_path: Path) -> None:
    """No address at start (pods not up yet): the gateway listens, not ready, and serves
    once the name resolves."""
    port = free_port()
    addresses: list[str] = []
    settings = GatewaySettings(
        registry=str(zoo_registry),
        base=BASE_NAME,
        port=free_port(),
        cache_dir=tmp_path / "cache",
        backends_dns=f"http://vllm-headless.test:{port}",
        backends_dns_refresh_s=0.2,
        probe_interval_s=300,
    )
    with (
        instant("127.0.0.1", port, tmp_path / "one.log"),
        in_process_gateway(settings, addresses, ready="/health") as gw,
    ):
        r = httpx.get(f"{gw}/ready", timeout=10)
        assert r.status_code == 503 and r.json()["backends"] == [], r.text
        assert ask(gw, BASE_NAME).status_code == 503
        addresses.append("127.0.0.1")
        assert wait_until(lambda: ready_backends(gw) == {"127.0.0.1": True}, 30)
        assert httpx.get(f"{gw}/ready", timeout=10).status_code == 200
        assert ask(gw, BASE_NAME).status_code == 200


def busy(url: str) -> bool:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return any(x.startswith("vllm:num_requests_running ") and x.split()[1] != "0" for x in lines)


def test_gateway_serve_resolves_the_name(zoo_registry: Path, tmp_path: Path) -> None:
    """The whole path in a real `gateway serve` process: getaddrinfo of `localhost`."""
    port = free_port()
    env = {**settings_env(backends_dns=f"http://localhost:{port}", probe_interval_s=300)}
    with (
        instant("127.0.0.1", port, tmp_path / "one.log") as one,
        launch.gateway(zoo_registry, tmp_path / "cache", backend=(), env=env) as gw,
    ):
        assert ready_backends(gw.url) == {"127.0.0.1": True}
        assert ask(gw.url, ADAPTERS[0]).status_code == 200
        assert held(one.url) == {ADAPTERS[0]}


def test_both_ways_of_naming_backends_are_refused(zoo_registry: Path) -> None:
    cmd = [launch.GATEWAY, "serve", "--registry", str(zoo_registry), "--backend", "http://a:1",
           "--backends-dns", "http://b:1", "--port", str(free_port())]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode != 0 and "not both" in done.stderr, done.stderr
