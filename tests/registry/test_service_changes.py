"""registry/service/changes.py: one reader of the change token for every watcher of a
server. The feed's logic is tested here over a counting reader (pure asyncio); the long
poll it serves is tested on real servers by the contract suite (tests/registry/
test_watch.py, on a directory service and on two servers over PostgreSQL) and below with
many watchers at once on a real service."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from registry.http_client import HttpRegistry
from registry.protocol import Registry
from registry.service.changes import ChangeFeed
from registry.settings import RegistrySettings

POLL_S = 0.02


class Store:
    """A change token that counts its reads, and can fail."""

    def __init__(self) -> None:
        self.token = 7
        self.reads = 0
        self.down = False

    async def read(self) -> int:
        self.reads += 1
        if self.down:
            raise ConnectionError("database down")
        return self.token


def test_a_hundred_watchers_cost_one_read_per_poll() -> None:
    store = Store()

    async def run() -> list[int | None]:
        feed = ChangeFeed(store.read, POLL_S)
        waiters = [asyncio.ensure_future(feed.wait(7, 30)) for _ in range(100)]
        await asyncio.sleep(0.5)
        store.token = 8
        return await asyncio.wait_for(asyncio.gather(*waiters), 5)

    started = time.monotonic()
    assert asyncio.run(run()) == [8] * 100
    polls = (time.monotonic() - started) / POLL_S
    # One watcher alone would read as often: 100 read 100x as often before the feed.
    assert store.reads <= polls + 2, (store.reads, polls)


def test_a_watcher_behind_returns_at_once_and_one_current_waits_out_its_timeout() -> None:
    store = Store()

    async def run() -> tuple[int | None, float, int | None, float]:
        feed = ChangeFeed(store.read, POLL_S)
        started = time.monotonic()
        behind = await feed.wait(6, 30)
        fast = time.monotonic() - started
        started = time.monotonic()
        current = await feed.wait(7, 0.3)
        return behind, fast, current, time.monotonic() - started

    behind, fast, current, waited = asyncio.run(run())
    assert (behind, current) == (7, 7)
    assert fast < 0.25 and 0.29 <= waited < 2


def test_a_failed_read_reaches_every_waiter_and_the_feed_recovers() -> None:
    store = Store()

    async def run() -> tuple[list[BaseException | int | None], int | None]:
        feed = ChangeFeed(store.read, POLL_S)
        waiters = [asyncio.ensure_future(feed.wait(7, 30)) for _ in range(5)]
        await asyncio.sleep(0.1)
        store.down = True
        failed = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
        store.down, store.token = False, 9
        return failed, await asyncio.wait_for(feed.wait(7, 30), 5)

    failed, after = asyncio.run(run())
    assert all(isinstance(f, ConnectionError) for f in failed), failed
    assert after == 9


def test_a_client_that_left_ends_its_wait() -> None:
    store = Store()

    async def gone() -> bool:
        return True

    async def run() -> tuple[int | None, float]:
        feed = ChangeFeed(store.read, POLL_S)
        started = time.monotonic()
        return await feed.wait(7, 30, gone), time.monotonic() - started

    result, took = asyncio.run(run())
    assert result is None and took < 3


def test_the_poller_stops_when_nobody_waits() -> None:
    store = Store()

    async def run() -> int:
        feed = ChangeFeed(store.read, POLL_S)
        await feed.wait(7, 0.1)
        await asyncio.sleep(0.1)
        reads = store.reads
        await asyncio.sleep(0.3)
        return store.reads - reads

    assert asyncio.run(run()) == 0


@pytest.mark.parametrize("reg_kind", ["http", "servers"])
def test_forty_eight_watchers_of_one_service_all_see_a_push(
    reg: Registry, settings: RegistrySettings, make_adapter: Callable[..., Path]
) -> None:
    """More watchers than the server has worker threads (40 by default) each hold a long
    poll on a real service (four clients of twelve: one client pools 32 connections); one
    push wakes every one of them within a second."""
    now = reg.change_token()
    path = make_adapter("support")
    clients = [HttpRegistry(reg.location, settings) for _ in range(4)]
    watchers = 48
    started_all = threading.Barrier(watchers + 1, timeout=30)

    def watch(i: int) -> tuple[int, float]:
        started_all.wait()
        moved = clients[i % len(clients)].wait_for_change(now, timeout_s=30)
        return moved, time.monotonic()

    try:
        with ThreadPoolExecutor(watchers) as pool:
            futures = [pool.submit(watch, i) for i in range(watchers)]
            started_all.wait()
            time.sleep(1.0)  # every watcher is waiting at the server
            reg.push_adapter(path, dataset="support-data")
            pushed = time.monotonic()
            results = [f.result(timeout=60) for f in futures]
    finally:
        for client in clients:
            client.close()
    token = reg.change_token()
    # A push writes more than one event: a watcher may wake at any of them.
    assert all(now < moved <= token for moved, _ in results), (now, token, results)
    assert max(at for _, at in results) - pushed < 1.0
