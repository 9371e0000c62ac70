"""How the gateway calls its registry, with callables standing in for the registry's
methods (the real registry under the resolver: test_registry_down.py): pulls never hold
up lookups, every call has a limit, and the health records what happened."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from server.errors import GatewayError, ModelNotFoundError, RegistryUnavailableError
from server.registry_calls import PULL_THREADS, RegistryCalls


class Unreachable(Exception):
    pass


def to_gateway(e: Exception) -> GatewayError | None:
    return RegistryUnavailableError(str(e)) if isinstance(e, Unreachable) else None


def refused() -> None:
    raise Unreachable("connection refused")


def not_found() -> None:
    raise ModelNotFoundError("no such model")


def calls(timeout_s: float = 5.0, pull_timeout_s: float = 5.0) -> RegistryCalls:
    return RegistryCalls(to_gateway, timeout_s=timeout_s, pull_timeout_s=pull_timeout_s, watch_s=1)


def test_pulls_in_flight_never_block_a_lookup() -> None:
    release = threading.Event()

    async def run() -> float:
        c = calls()
        try:
            pulls = [
                asyncio.ensure_future(c.pull(release.wait, 5)) for _ in range(PULL_THREADS + 2)
            ]
            await asyncio.sleep(0.05)  # every pull thread is busy now, and two more queue
            started = time.monotonic()
            assert await c.lookup(lambda: "route") == "route"
            took = time.monotonic() - started
            release.set()
            assert await asyncio.gather(*pulls) == [True] * (PULL_THREADS + 2)
            return took
        finally:
            release.set()
            await c.close()

    assert asyncio.run(run()) < 0.5


@pytest.mark.parametrize(
    ("fn", "error", "up", "reason"),
    [
        (lambda: time.sleep(1.0), RegistryUnavailableError, False, "timeout"),
        (refused, RegistryUnavailableError, False, "registry_unavailable"),
        # the registry answered, with an error: it is up
        (not_found, ModelNotFoundError, True, None),
        (lambda: "ok", None, True, None),
    ],
)
def test_each_outcome_sets_the_health(
    fn: object, error: type[Exception] | None, up: bool, reason: str | None
) -> None:
    async def run() -> RegistryCalls:
        c = calls(timeout_s=0.2)
        try:
            if error is None:
                await c.lookup(fn)  # type: ignore[arg-type]
            else:
                with pytest.raises(error):
                    await c.lookup(fn)  # type: ignore[arg-type]
            return c
        finally:
            await c.close()

    c = asyncio.run(run())
    assert c.health.up is up and c.health.last_error == reason


def test_a_bug_is_not_a_registry_outage() -> None:
    async def run() -> RegistryCalls:
        c = calls()
        try:
            with pytest.raises(KeyError):
                await c.lookup(dict().__getitem__, "missing")
            return c
        finally:
            await c.close()

    assert asyncio.run(run()).health.failures == 0


def test_a_pull_has_its_own_longer_limit() -> None:
    async def run() -> None:
        c = calls(timeout_s=0.1, pull_timeout_s=2.0)
        try:
            assert await c.pull(lambda: time.sleep(0.3) or "pulled") == "pulled"
            with pytest.raises(RegistryUnavailableError, match=r"within 0\.1 s"):
                await c.lookup(time.sleep, 0.3)
        finally:
            await c.close()

    asyncio.run(run())
