"""How the gateway calls its registry: off the event loop, on pools of their own, within
a timeout, and with one record of whether the registry answers.

Lookups (route and model-list answers, quarantine writes) run on a few threads; pulls on
their own two, so a large pull never holds up a lookup; the watch of the change token
on one more. Every call has a limit: a lookup `timeout_s`, a pull `pull_timeout_s`, a
watch its long-poll plus `timeout_s`. A call past its limit, or one the registry's client
reports as unreachable, marks the registry down in :class:`RegistryHealth`; any answer
(an error included) marks it up. Both registry forms are thread-safe, so one handle
serves every thread (a directory's SQLite connection is shared under its lock).

This module does not import the registry: the resolver hands it the callables and the
one mapping of registry errors to gateway errors (`server.resolver.from_registry`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar

from server.errors import GatewayError, RegistryUnavailableError
from server.registry_health import RegistryHealth

T = TypeVar("T")
log = logging.getLogger("loraport.gateway")

LOOKUP_THREADS = 4
PULL_THREADS = 2


class ChangeSource(Protocol):
    """What the watch needs of a registry (a subset of `registry.Registry`)."""

    def change_token(self) -> int: ...

    def wait_for_change(self, since: int, *, timeout_s: float) -> int: ...


class RegistryCalls:
    def __init__(
        self,
        to_gateway_error: Callable[[Exception], GatewayError | None],
        *,
        timeout_s: float,
        pull_timeout_s: float,
        watch_s: float,
    ) -> None:
        self._to_gateway_error = to_gateway_error
        self.timeout_s = timeout_s
        self.pull_timeout_s = pull_timeout_s
        self.watch_s = watch_s
        self._lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="registry-lookup")
        self._pulls = ThreadPoolExecutor(PULL_THREADS, thread_name_prefix="registry-pull")
        self._watcher = ThreadPoolExecutor(1, thread_name_prefix="registry-watch")
        self.health = RegistryHealth()

    async def lookup(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._call(self._lookups, self.timeout_s, fn, *args)

    async def pull(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._call(self._pulls, self.pull_timeout_s, fn, *args)

    async def _call(
        self, pool: ThreadPoolExecutor, limit: float, fn: Callable[..., T], *args: Any
    ) -> T:
        """`fn(*args)` on `pool` within `limit` s; registry errors leave as gateway
        errors, and the health records whether the registry answered."""
        work = asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args))
        try:
            result = await asyncio.wait_for(work, limit)
        except TimeoutError:
            # The thread finishes on its own: the registry client's own timeout is the
            # same `timeout_s`, so a stuck lookup frees its thread soon after.
            self.health.failed(time.monotonic(), "timeout")
            log.warning("the registry did not answer within %g s", limit)
            raise RegistryUnavailableError(
                f"the registry did not answer within {limit:g} s"
            ) from None
        except GatewayError as e:
            self._seen(e)
            raise
        except Exception as e:
            mapped = self._to_gateway_error(e)
            if mapped is None:
                raise
            raise self._seen(mapped) from e
        self.health.answered(time.monotonic())
        return result

    def _seen(self, error: GatewayError) -> GatewayError:
        if isinstance(error, RegistryUnavailableError):
            self.health.failed(time.monotonic(), error.code or "registry_unavailable")
            log.warning("%s", error.message)
        else:  # the registry answered, with an error
            self.health.answered(time.monotonic())
        return error

    async def watch(
        self,
        source: ChangeSource,
        since: Callable[[], int],
        on_token: Callable[[int], object],
    ) -> None:
        """Follow `source`'s change token for good, handing each answer to `on_token`: a
        long-poll (`watch_s`) while the registry answers; one quick ask, with back-off,
        while it does not (so its return is seen at once, not a long-poll later)."""
        while True:
            try:
                if self.health.up:
                    wait = partial(source.wait_for_change, since(), timeout_s=self.watch_s)
                    token = await self._call(self._watcher, self.watch_s + self.timeout_s, wait)
                else:
                    token = await self._call(self._watcher, self.timeout_s, source.change_token)
            except GatewayError:
                await asyncio.sleep(self.health.retry_in_s() or 1.0)
                continue
            except Exception:  # a bug: keep watching, but never spin
                log.exception("registry watch failed")
                await asyncio.sleep(1.0)
                continue
            on_token(token)

    async def close(self, closer: Callable[[], object] | None = None) -> None:
        if closer is not None:
            try:
                await self._call(self._lookups, self.timeout_s, closer)
            except Exception:
                log.warning("the registry handle did not close cleanly", exc_info=True)
        for pool in (self._lookups, self._pulls, self._watcher):
            pool.shutdown(wait=False, cancel_futures=True)
