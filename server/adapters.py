"""Adapters on their way into vLLM: a digest-verified local cache, and a bounded LRU of
the adapters each backend holds.

vLLM only ever receives paths inside the gateway's cache, named by content digest;
nothing from a request reaches a path. Concurrent first requests for one adapter share
one load. When a backend holds `capacity` adapters, the least recently used one that
serves no request is unloaded before the next loads.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from server.errors import GatewayError, TooManyRequestsError
from server.metrics import Metrics
from server.resolver import Resolver, Target, parse_lora_name
from server.routing import BackendView
from server.vllm_http import LoraNotLoadedError, VllmBackend


class AdapterCache:
    """Adapter directories materialised from the registry under `root/<digest hex>/`."""

    def __init__(self, root: Path, resolver: Resolver) -> None:
        self.root = root
        self._resolver = resolver
        self._pending: dict[str, asyncio.Task[Path]] = {}

    async def path(self, target: Target) -> Path:
        assert target.adapter is not None
        hexdigest = target.digest_hex
        dest = self.root / hexdigest
        if dest.is_dir():
            return dest.resolve()
        task = self._pending.get(hexdigest)
        if task is None:
            task = asyncio.ensure_future(self._pull(target.ref, dest))
            self._pending[hexdigest] = task
            task.add_done_callback(lambda _: self._pending.pop(hexdigest, None))
        return await asyncio.shield(task)

    async def _pull(self, ref: str, dest: Path) -> Path:
        # By NAME@N, not digest: identical content may live under several names.
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._resolver.pull(ref, dest)
        except GatewayError:
            if not dest.is_dir():  # another gateway process may have won the race
                raise
        return dest.resolve()


class AdapterSlots:
    """The adapters one vLLM backend holds, least recently used first."""

    def __init__(
        self,
        backend: VllmBackend,
        cache: AdapterCache,
        capacity: int,
        metrics: Metrics,
        *,
        pulls: bool = False,
    ) -> None:
        self.backend = backend
        self.capacity = capacity
        self.pulls = pulls
        """The backend pulls adapters itself, by name (GATEWAY_BACKENDS_PULL): a load is
        only a slot made free; vLLM fetches the adapter on the first request that names it."""
        self._cache = cache
        self._metrics = metrics
        self._lru: OrderedDict[str, tuple[str, str]] = OrderedDict()  # name -> metric labels
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._users: Counter[str] = Counter()
        self._lock = asyncio.Lock()
        self._generation = backend.state.generation

    @property
    def loaded(self) -> list[str]:
        self._sync_generation()
        return list(self._lru)

    def view(self, name: str | None) -> BackendView:
        """This backend as the router sees it for a request of adapter `name` (None: the
        base model)."""
        self._sync_generation()
        state = self.backend.state
        return BackendView(
            open=state.ready and not state.draining,
            in_flight=state.in_flight + state.others_in_flight,
            holds=name is not None and (name in self._lru or name in self._loading),
            free_slots=max(0, self.capacity - len(self._lru)),
            evictable=any(self._users[n] == 0 for n in self._lru),
        )

    async def acquire(self, target: Target) -> str:
        """The name to send as `model` to this backend, held loaded until `release`."""
        name = target.lora_name
        if name is None:
            return self._base_id()
        self._sync_generation()
        self._users[name] += 1  # pinned before loading: a load behind ours cannot evict it
        try:
            if name not in self._lru:
                await self._ensure(name, target)
                assert target.adapter is not None  # a LoRA name comes from an adapter
                labels = (target.adapter.name, str(target.adapter.version))
                self._metrics.adapter_load_waits.labels(*labels).inc()
            if name in self._lru:
                self._lru.move_to_end(name)
        except BaseException:
            self._users[name] -= 1
            raise
        return name

    def release(self, target: Target) -> None:
        """A request that `acquire`d `target` here has ended."""
        name = target.lora_name
        if name is not None:
            self._users[name] -= 1

    @asynccontextmanager
    async def use(self, target: Target) -> AsyncIterator[str]:
        """`acquire` and `release` around a block (a stream's, on its exit stack)."""
        name = await self.acquire(target)
        try:
            yield name
        finally:
            self.release(target)

    @property
    def busy(self) -> bool:
        """A request uses this backend, or an adapter is loading there."""
        return (
            self.backend.state.in_flight > 0
            or bool(self._loading)
            or any(n > 0 for n in self._users.values())
        )

    def observe(self, listed: set[str], generation: int) -> None:
        """vLLM's own list of the adapters it holds (its `/v1/models`, asked while the
        backend was at `generation`): other gateways in front of it load and evict too.
        What it lists that this gateway did not load counts against the bound, as the
        least recently used (an idle one may be evicted here: the other gateway's next
        request for it gets vLLM's 404 and loads it again); what it no longer lists is
        gone, unless a request of ours uses it or is loading it."""
        self._sync_generation()
        if generation != self._generation:
            return  # asked before a restart: the list is of a server that is gone
        for name in sorted(listed - self._lru.keys() - self._loading.keys()):
            labels = parse_lora_name(name)  # one loading here is counted once it is loaded
            if labels:
                self._lru[name] = labels
                self._lru.move_to_end(name, last=False)
        for name in [n for n in self._lru if n not in listed]:
            if self._users[name] == 0 and name not in self._loading:
                del self._lru[name]

    def forget(self, name: str) -> None:
        """vLLM no longer knows `name` (restart, or evicted behind our back)."""
        self._lru.pop(name, None)

    async def evict(self, name: str) -> None:
        """Unload `name` now (a quarantined adapter): no request may run it again here."""
        async with self._lock:
            with suppress(LoraNotLoadedError):
                await self.backend.unload_lora(name)
            self._lru.pop(name, None)

    def _base_id(self) -> str:
        model_id = self.backend.state.model_id
        assert model_id is not None
        return model_id

    def _sync_generation(self) -> None:
        if self.backend.state.generation != self._generation:
            self._generation = self.backend.state.generation
            self._lru.clear()

    async def _ensure(self, name: str, target: Target) -> None:
        task = self._loading.get(name)
        if task is None:
            task = asyncio.ensure_future(self._load(name, target))
            self._loading[name] = task
            task.add_done_callback(lambda _: self._loading.pop(name, None))
        await asyncio.shield(task)

    async def _load(self, name: str, target: Target) -> None:
        assert target.adapter is not None
        labels = (target.adapter.name, str(target.adapter.version))
        started = time.perf_counter()
        try:
            path = None if self.pulls else await self._cache.path(target)
            async with self._lock:
                await self._adopt_leftovers()
                await self._make_room()
                if path is not None:
                    await self.backend.load_lora(name, str(path))
                self._lru[name] = labels
        except BaseException:
            self._metrics.adapter_loads.labels(*labels, "error").inc()
            raise
        if path is None:  # the backend loads it on the request: its log has the figures
            return
        self._metrics.adapter_loads.labels(*labels, "ok").inc()
        self._metrics.adapter_load_seconds.labels(*labels).observe(time.perf_counter() - started)

    async def _adopt_leftovers(self) -> None:
        """Before each load, what vLLM holds now (`observe`): adapters from an earlier
        gateway run, or another gateway's, count against the bound too (oldest first), so
        the LRU frees them instead of leaking them, and the bound holds across gateways
        whose last sync is a moment old."""
        generation = self.backend.state.generation
        self.observe(await self.backend.lora_names(), generation)

    async def _make_room(self) -> None:
        while len(self._lru) >= self.capacity:
            victim = next((n for n in self._lru if self._users[n] == 0), None)
            if victim is None:
                raise TooManyRequestsError(
                    f"all {self.capacity} adapter slots of backend {self.backend.label} are "
                    "serving requests; retry shortly"
                )
            with suppress(LoraNotLoadedError):  # already gone is as good as unloaded
                await self.backend.unload_lora(victim)  # on failure it stays counted
            labels = self._lru.pop(victim)
            self._metrics.adapter_evictions.labels(*labels).inc()
