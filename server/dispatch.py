"""Getting a request to a vLLM backend: which one (as server/routing.py chooses), loading
its adapter there, and what happens when a backend cannot be reached.

A request that never reached a backend (connection refused, reset before it was sent:
:class:`NotSentError`) is sent to another ready one and the unreachable backend leaves the
rotation at once, waking the probe (``backend_lost``) that brings it back. An adapter
vLLM forgot behind our back (evicted by another gateway, a restart) is loaded once more;
a second refusal is the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from server.adapters import AdapterSlots
from server.containment import QUEUE_WHILE_DRAINED_S, Containment
from server.errors import AdapterLoadError, BackendError, BackendUnavailableError, GatewayError
from server.metrics import Metrics
from server.protocol import PATHS, Endpoint
from server.resolver import Target
from server.routing import BackendView, route
from server.settings import GatewaySettings
from server.vllm_http import LoraNotLoadedError, NotSentError

log = logging.getLogger("loraport.gateway")
CLOSED = BackendView(open=False, in_flight=0)
"""A backend this request already failed to reach."""


def not_loaded(slots: AdapterSlots, target: Target, e: LoraNotLoadedError) -> GatewayError:
    """vLLM still does not know the adapter after a second try. A backend that pulls by
    name (GATEWAY_BACKENDS_PULL) could not fetch it: say where to look."""
    if not slots.pulls:
        return e
    return BackendError(
        f"vLLM backend {slots.backend.label} could not fetch {target.ref} from the registry "
        f"({e.message}); check that it runs with REGISTRY_URL set and "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (its log says why)"
    )


def load_failed(slots: AdapterSlots, target: Target, e: AdapterLoadError) -> AdapterLoadError:
    """vLLM would not load the adapter: say which backend, what vLLM said, and the usual
    cause (a rank above the server's --max-lora-rank) with this adapter's rank."""
    rank = target.adapter.peft.r if target.adapter is not None else "?"
    return AdapterLoadError(
        f"vLLM backend {slots.backend.label} cannot load {target.ref} ({e.message}); its "
        f"log says why. An adapter of rank {rank} needs vLLM started with --max-lora-rank "
        f"{rank} or more; other adapters are served as before"
    )


class Dispatch:
    """The gateway's backends (``slots``, changed in place by server/app.py when DNS says
    so) and the way a request gets to one of them."""

    def __init__(
        self,
        settings: GatewaySettings,
        slots: list[AdapterSlots],
        metrics: Metrics,
        containment: Containment,
    ) -> None:
        self.settings = settings
        self.slots = slots
        self.metrics = metrics
        self.containment = containment
        self.backend_lost = asyncio.Event()
        """Set when a request finds a backend unreachable: the probe looks at once."""

    async def unary(
        self, endpoint: Endpoint, forward: dict[str, Any], target: Target
    ) -> tuple[AdapterSlots, bytes]:
        """One whole answer (its body as vLLM sent it), and the backend that gave it.
        ``forward["model"]`` is then the name it was sent to that backend under."""
        tried: list[AdapterSlots] = []
        while True:
            slots = await self._pick(target, tried)
            try:
                return slots, await self._generate(slots, endpoint, forward, target)
            except NotSentError as e:
                self._unreached(slots, e, tried)

    async def open_stream(
        self, stack: AsyncExitStack, endpoint: Endpoint, forward: dict[str, Any], target: Target
    ) -> tuple[AdapterSlots, AsyncIterator[str]]:
        """An open stream (closed with ``stack``) and its backend, whose in-flight count
        is raised until the caller lowers it (a backend that left waits for it)."""
        tried: list[AdapterSlots] = []
        while True:
            slots = await self._pick(target, tried)
            slots.backend.state.in_flight += 1  # while it opens too
            try:
                return slots, await self._open(slots, stack, endpoint, forward, target)
            except NotSentError as e:
                slots.backend.state.in_flight -= 1
                await stack.aclose()
                self._unreached(slots, e, tried)
            except BaseException:
                slots.backend.state.in_flight -= 1
                await stack.aclose()
                raise

    def max_model_len(self) -> int | None:
        """The smallest context length a backend told, if any did."""
        known = None
        for s in self.slots:  # a loop, not a comprehension: every request asks
            n = s.backend.state.max_model_len
            if n and (known is None or n < known):
                known = n
        return known

    async def _pick(self, target: Target, tried: list[AdapterSlots]) -> AdapterSlots:
        """A ready backend not in `tried`. A backend drained for a check of its engine
        (server/containment.py, about a second) is waited for, not failed: its requests
        queue here until the check ends."""
        if len(self.slots) == 1 and not tried:  # every policy picks the one open backend
            only = self.slots[0]
            state = only.backend.state
            if state.ready and not state.draining:
                return only
        deadline = time.monotonic() + QUEUE_WHILE_DRAINED_S
        name = target.lora_name
        while True:
            if not self._others_ready(tried):
                raise BackendUnavailableError(
                    "no vLLM backend is ready (starting, restarting or degraded); retry shortly"
                )
            views = [CLOSED if s in tried else s.view(name) for s in self.slots]
            chosen = route(
                self.settings.routing, views, name is not None, self.settings.spread_in_flight
            )
            if chosen is not None:
                return self.slots[chosen]
            if time.monotonic() > deadline:
                raise BackendUnavailableError(
                    "every ready vLLM backend is drained for a check of its engine; retry shortly"
                )
            await asyncio.sleep(0.05)

    def _others_ready(self, tried: list[AdapterSlots]) -> bool:
        return any(s.backend.state.ready for s in self.slots if s not in tried)

    def _unreached(
        self, slots: AdapterSlots, error: NotSentError, tried: list[AdapterSlots]
    ) -> None:
        """`slots`' backend could not be reached: out of rotation at once (its probe brings
        it back). The request never got there, so it goes to another backend if one is
        ready; if none is, `error` is the answer."""
        backend = slots.backend
        backend.state.unreachable(error.message)
        self.metrics.backend_up.labels(backend.label).set(0)
        self.backend_lost.set()
        tried.append(slots)
        if not self._others_ready(tried):
            raise error
        log.warning("backend %s unreachable (%s); sending the request elsewhere",
                    backend.label, error.message)  # fmt: skip
        self.metrics.requests_rerouted.labels(backend.label).inc()

    async def _generate(
        self, slots: AdapterSlots, endpoint: Endpoint, forward: dict[str, Any], target: Target
    ) -> bytes:
        """One answer from `slots`' backend (an adapter it forgot is loaded once more)."""
        state = slots.backend.state
        for attempt in (0, 1):
            try:
                forward["model"] = await slots.acquire(target)
                try:
                    state.in_flight += 1
                    self.containment.started(slots, target)
                    try:
                        return await slots.backend.answer(PATHS[endpoint], forward)
                    finally:
                        state.in_flight -= 1
                        self.containment.ended(slots, target)
                finally:
                    slots.release(target)
            except LoraNotLoadedError as e:
                if attempt or target.lora_name is None:
                    raise not_loaded(slots, target, e) from None
                slots.forget(target.lora_name)
            except AdapterLoadError as e:
                slots.forget(target.lora_name or "")  # holds no slot on that backend
                raise load_failed(slots, target, e) from None
        raise AssertionError("unreachable")

    async def _open(
        self,
        slots: AdapterSlots,
        stack: AsyncExitStack,
        endpoint: Endpoint,
        forward: dict[str, Any],
        target: Target,
    ) -> AsyncIterator[str]:
        """An open stream from `slots`' backend, closed with `stack`."""
        for attempt in (0, 1):
            try:
                forward["model"] = await stack.enter_async_context(slots.use(target))
                return await stack.enter_async_context(
                    slots.backend.stream(PATHS[endpoint], forward)
                )
            except LoraNotLoadedError as e:
                await stack.aclose()
                if attempt or target.lora_name is None:
                    raise not_loaded(slots, target, e) from None
                slots.forget(target.lora_name)
            except AdapterLoadError as e:
                await stack.aclose()
                slots.forget(target.lora_name or "")  # holds no slot on that backend
                raise load_failed(slots, target, e) from None
        raise AssertionError("unreachable")
