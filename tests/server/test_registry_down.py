"""The resolver on a real `registry serve` process that is killed -9 and restarted (no
vLLM: the vLLM-backed gateway test is tests/server/test_registry_outage.py). Known names
keep their last known good route, a name never resolved is a 503 with Retry-After at
once, /v1/models keeps its last list, the health says down and how stale; the restarted
registry is seen within about a second, and a change made while it was down is taken."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

import registry
from server.errors import GatewayError, RegistryUnavailableError
from server.resolver import Resolver
from server.supervisor import free_port
from tests.support.registry_service import registry_service
from tests.support.zoo import BASE_NAME


async def outcome(r: Resolver, model: str) -> str:
    try:
        return (await r.resolve(model)).ref
    except GatewayError as e:
        return f"{e.status}/{e.code}"


async def until(predicate: object, timeout_s: float = 10.0) -> float:
    """Seconds until `predicate()` is true (fails after `timeout_s`)."""
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - started < timeout_s, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_the_registry_killed_and_restarted_under_a_resolver(
    zoo_registry: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "registry"
    shutil.copytree(zoo_registry, copy)
    port = free_port()

    async def run(proc_url: str, kill: object, restart: object) -> None:
        r = Resolver(proc_url, timeout_s=2.0, watch_s=2.0)
        await r.open(BASE_NAME)
        watch = asyncio.create_task(r.watch_forever())
        try:
            assert await outcome(r, "extract") == "extract@1"
            assert await outcome(r, "support-v1@production") == "support-v1@1"
            listed = await r.model_ids()
            assert r.health.up and r.health.stale_s(time.monotonic()) == 0.0

            kill()  # type: ignore[operator]
            await until(lambda: not r.health.up)  # the watch notices
            assert await outcome(r, "extract") == "extract@1"
            assert await outcome(r, "support-v1@production") == "support-v1@1"
            assert await r.model_ids() == listed
            started = time.monotonic()
            with pytest.raises(RegistryUnavailableError) as caught:
                await r.resolve("triage")  # never resolved here
            assert time.monotonic() - started < 0.5  # refused at once, not after a timeout
            assert caught.value.status == 503 and caught.value.headers["retry-after"] == "5"
            await asyncio.sleep(0.3)
            assert r.health.stale_s(time.monotonic()) > 0.2
            assert r.health.detail(time.monotonic())["last_error"] == "registry_unavailable"

            # A change made while the registry was down (on its directory) is seen on return
            with registry.open(copy, create=False) as reg:
                pushed = reg.push_adapter(
                    _copy_adapter(tmp_path, "support-v2", "support-v1"),
                    base=BASE_NAME,
                    allow_unknown_dataset=True,
                )
                reg.set_alias("support-v1", "production", pushed.adapter.version)
            restart()  # type: ignore[operator]
            took = await until(lambda: r.health.up)
            print(f"registry back: seen after {took:.2f} s")
            assert took < 5
            seen = await _until_served(r, "support-v1@production", "support-v1@2")
            print(f"alias move made while down: served {seen:.2f} s after the registry's return")
            assert await outcome(r, "triage") == "triage@1"
            assert r.health.stale_s(time.monotonic()) == 0.0
        finally:
            watch.cancel()
            await r.close()

    log = tmp_path / "serve.log"
    with registry_service(copy, log, port=port) as proc:
        state: dict[str, object] = {}

        def kill() -> None:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait()

        def restart() -> None:
            ctx = registry_service(copy, tmp_path / "serve2.log", port=port)
            state["proc"] = ctx.__enter__()
            state["ctx"] = ctx

        try:
            asyncio.run(run(proc.url, kill, restart))
        finally:
            ctx = state.get("ctx")
            if ctx is not None:
                ctx.__exit__(None, None, None)  # type: ignore[attr-defined]


async def _until_served(r: Resolver, model: str, ref: str) -> float:
    started = time.monotonic()
    while (await outcome(r, model)) != ref:
        assert time.monotonic() - started < 5, await outcome(r, model)
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _copy_adapter(tmp_path: Path, source: str, name: str) -> Path:
    from tests.support.zoo import adapter_dir

    dest = tmp_path / "push" / name
    shutil.copytree(adapter_dir(source), dest)
    return dest


def test_a_directory_registry_is_watched_without_a_request_asking(
    zoo_registry: Path, tmp_path: Path
) -> None:
    """The embedded default: the watch polls the directory's token (200 ms); an alias move
    reaches the routes within a fraction of a second, and a cached route asks nothing."""
    copy = tmp_path / "registry"
    shutil.copytree(zoo_registry, copy)

    async def run() -> float:
        r = Resolver(str(copy), watch_s=1.0)
        await r.open(BASE_NAME)
        watch = asyncio.create_task(r.watch_forever())
        try:
            assert await outcome(r, "support-v1") == "support-v1@1"
            with registry.open(copy, create=False) as reg:
                pushed = reg.push_adapter(
                    _copy_adapter(tmp_path, "support-v2", "support-v1"),
                    base=BASE_NAME,
                    allow_unknown_dataset=True,
                )
                reg.set_alias("support-v1", "production", pushed.adapter.version)
            return await _until_served(r, "support-v1", "support-v1@2")
        finally:
            watch.cancel()
            await r.close()

    took = asyncio.run(run())
    print(f"directory alias move served after {took:.3f} s")
    assert took < 1.0
