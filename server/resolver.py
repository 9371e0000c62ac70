"""From a request's `model` field to one concrete target, through the registry.

The registry owns the ref grammar (NAME, NAME@N, NAME@ALIAS, sha256:...); the gateway
asks it and caches answers until the registry's change token moves. All registry calls
run on one dedicated thread, so SQLite never blocks the event loop and its connection
never crosses threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import registry
from server.errors import InvalidRequestError, ModelNotFoundError, from_registry
from server.metrics import Series

T = TypeVar("T")
log = logging.getLogger("loraport.gateway")
STABLE = "stable"


def pick_base(reg: registry.Registry, ref: str | None) -> registry.BaseModel:
    """The base model a gateway serves: `ref`, else the registry's only base model."""
    if ref is not None:
        return reg.base(ref)
    bases = reg.list_bases()
    if len(bases) != 1:
        names = ", ".join(b.name for b in bases) or "none"
        raise registry.RegistryError(
            f"the registry holds {len(bases)} base models ({names}); choose one with "
            "--base NAME (add one with `registry base add DIR --name NAME`)"
        )
    return bases[0]


@dataclass(frozen=True)
class Target:
    """What serves one request: the base model alone, or one adapter version on it."""

    base: registry.BaseModel
    adapter: registry.AdapterVersion | None
    arm: str = STABLE

    @property
    def ref(self) -> str:
        return self.adapter.ref if self.adapter else self.base.name

    @property
    def name(self) -> str:
        return self.adapter.name if self.adapter else self.base.name

    @property
    def series(self) -> Series:
        if self.adapter is None:
            return Series("base", "-", self.arm)
        return Series(self.adapter.name, str(self.adapter.version), self.arm)

    @property
    def lora_name(self) -> str | None:
        """The stable name vLLM knows this version by: immutable, so safe to cache."""
        if self.adapter is None:
            return None
        return f"{self.adapter.ref}+{self.adapter.digest.removeprefix('sha256:')[:12]}"


class Resolver:
    def __init__(self, location: str | None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        self._location = location
        self._reg: registry.Registry | None = None
        self._cache: dict[str, Target] = {}
        self._token: int | None = None
        self.base: registry.BaseModel | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self, base_ref: str | None) -> registry.BaseModel:
        """Open the registry (on its thread) and pick the base model this gateway serves."""
        self._reg = await self.call(registry.open, self._location)
        self.base = await self.call(pick_base, self._reg, base_ref)
        self._token = await self.call(self._reg.change_token)
        return self.base

    async def close(self) -> None:
        if self._reg is not None:
            await self.call(self._reg.close)
        self._pool.shutdown(wait=False)

    async def refresh(self) -> bool:
        """Drop cached answers if the registry changed. True when it did."""
        assert self._reg is not None
        token = await self.call(self._reg.change_token)
        if token == self._token:
            return False
        self._token = token
        self._cache.clear()
        return True

    async def refresh_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # keep refreshing: the next tick may succeed
                log.exception("registry refresh failed")

    async def resolve(self, model: str) -> Target:
        hit = self._cache.get(model)
        if hit is not None:
            return hit
        target = await self.call(self._resolve, model)
        self._cache[model] = target
        return target

    def _resolve(self, model: str) -> Target:
        assert self._reg is not None and self.base is not None
        base = self.base
        if model in (base.name, base.digest):
            return Target(base, None)
        try:
            found = self._reg.resolve(model)
        except registry.RegistryError as e:
            raise from_registry(e) from e
        if found.kind != "adapter":
            raise ModelNotFoundError(
                f"{model!r} is a {found.kind}, not a servable model; this gateway serves "
                f"{base.name!r} and its adapters",
                param="model",
            )
        adapter = self._reg.adapter(model)
        if adapter.base_model.digest != base.digest:
            raise InvalidRequestError(
                f"{adapter.ref} was trained on base {adapter.base_model.name!r} "
                f"({adapter.base_model.digest}); this gateway serves {base.name!r} ({base.digest})",
                param="model",
                code="adapter_base_mismatch",
            )
        return Target(base, adapter)

    async def model_ids(self) -> list[tuple[str, str | None]]:
        """(id, parent) for /v1/models: the base, then every routable adapter ref."""
        return await self.call(self._model_ids)

    def _model_ids(self) -> list[tuple[str, str | None]]:
        assert self._reg is not None and self.base is not None
        base = self.base
        out: list[tuple[str, str | None]] = [(base.name, None)]
        by_name: dict[str, list[registry.AdapterVersion]] = {}
        for a in self._reg.list_adapters():
            if a.base_model.digest == base.digest:
                by_name.setdefault(a.name, []).append(a)
        for name, versions in by_name.items():
            if len(versions) == 1 or any("production" in v.aliases for v in versions):
                out.append((name, base.name))
            for v in versions:
                out.append((v.ref, base.name))
                out.extend((f"{name}@{alias}", base.name) for alias in v.aliases)
        return out

    async def pull(self, ref: str, dest: Path) -> Path:
        assert self._reg is not None
        return await self.call(self._reg.pull, ref, dest)
