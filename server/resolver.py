"""From a request's `model` field to one concrete target, through the registry.

The registry owns the ref grammar (NAME, NAME@N, NAME@ALIAS, sha256:...); the gateway
asks it and caches answers until the registry's change token moves. All registry calls
run on one dedicated thread, so SQLite never blocks the event loop and its connection
never crosses threads.

This is the one module of `server` that imports `registry`: every registry failure is
turned into a gateway error here (`from_registry`), by the status the registry's own
error table gives it, so the rest of the gateway never sees a registry type.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import registry
from registry.records import a_kind

# the registry's rank limit: the gateway's vLLM default (server/settings.py) reads it here
from registry.settings import DEFAULT_MAX_LORA_RANK as DEFAULT_MAX_LORA_RANK
from server.canary import CANARY, STABLE, Split
from server.errors import (
    AdapterQuarantinedError,
    AdapterUnderCheckError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
)
from server.metrics import Series

T = TypeVar("T")
log = logging.getLogger("loraport.gateway")
ROUTE_CACHE_SIZE = 4096


# Registry codes met while resolving a request's `model`, as OpenAI-style codes.
_MODEL_CODES = {
    "invalid_ref": "invalid_model_ref",
    "ambiguous_ref": "ambiguous_model",
    "ref_not_found": "model_not_found",
}


def from_registry(e: registry.RegistryError) -> GatewayError:
    """The one mapping of a registry failure met while serving to a gateway error: the
    registry's error table gives the status; a bad `model` gets OpenAI's codes."""
    message = str(e)
    code = _MODEL_CODES.get(e.code)
    if e.http_status == 404:
        return ModelNotFoundError(f"model not found: {message}", param="model")
    if e.http_status == 400:
        return InvalidRequestError(message, param="model", code=code or e.code)
    if isinstance(e, registry.IntegrityError):
        return GatewayError(
            f"a stored file failed digest verification ({message}); run `registry verify`",
            code="registry_integrity",
        )
    return GatewayError(f"registry error: {message}", code=f"registry_{e.code}")


class RegistryUnusable(Exception):
    """The registry cannot serve this gateway at all (checked before the server starts)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_registry(location: str | None, base_ref: str | None) -> dict[str, Any]:
    """Fail fast, with the registry's message and exit code, before any server starts.
    Returns the base model's ``config.json``, for :mod:`server.engine_support`."""
    try:
        with registry.open(location, create=False) as reg:
            return dict(registry.pick_base(reg, base_ref).architecture)
    except registry.RegistryError as e:
        raise RegistryUnusable(str(e), e.exit_code) from e


def parse_lora_name(name: str) -> tuple[str, str] | None:
    """(adapter name, version) of a stable LoRA name this gateway (or another) loaded."""
    parsed = registry.parse_lora_name(name)
    return None if parsed is None else (parsed.name, str(parsed.version))


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
        return None if self.adapter is None else registry.lora_name(self.adapter)

    @property
    def digest_hex(self) -> str:
        """The content digest's hex of what this target loads (cache directory names)."""
        return registry.Digest(self.adapter.digest if self.adapter else self.base.digest).hex


@dataclass(frozen=True)
class Route:
    """What one `model` string serves until the registry changes: its stable target and,
    while a rollout of `NAME` is active, the canary and the split between them."""

    stable: Target
    canary: Target | None = None
    split: Split | None = None

    def pick(self, key: str | None) -> Target:
        if self.canary is None or self.split is None:
            return self.stable
        return self.canary if self.split.arm(key) == CANARY else self.stable


class Resolver:
    def __init__(self, location: str | None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        self._location = location
        self._reg: registry.Registry | None = None
        # Bounded: keys are client input. Refs are canonical (the registry refuses other
        # spellings), so one version has a handful of keys, but unknown names are many.
        self._cache: OrderedDict[str, Route] = OrderedDict()
        self._token: int | None = None
        self.base: registry.BaseModel | None = None
        self._parent_digest: str | None = None
        # Versions this gateway quarantined but could not record in the registry (refused
        # here anyway; until this gateway restarts);
        # and versions held while containment replays them (server/containment.py).
        self._quarantined: dict[str, str] = {}
        self._held: dict[str, list[str]] = {}

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self, base_ref: str | None) -> registry.BaseModel:
        """Open the registry (on its thread) and pick the base model this gateway serves."""
        try:
            self._reg = await self.call(partial(registry.open, self._location, create=False))
            self.base = await self.call(registry.pick_base, self._reg, base_ref)
        except registry.RegistryError as e:
            raise from_registry(e) from e
        self._parent_digest = await self.call(self._lineage)
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

    async def resolve(self, model: str, key: str | None = None) -> Target:
        """The target for `model`; `key` (see `server.canary.sticky_key`) picks the arm
        where a rollout splits `model`."""
        route = self._cache.get(model)
        if route is None:
            route = await self.call(self._route, model)
            self._cache[model] = route
            if len(self._cache) > ROUTE_CACHE_SIZE:
                self._cache.popitem(last=False)
        return route.pick(key)

    def _route(self, model: str) -> Route:
        stable = self._resolve(model)
        adapter = stable.adapter
        # Only NAME and NAME@production split (refs are canonical, so the spelling is
        # exact); a pinned NAME@N or another alias always serves what it names.
        if adapter is None or model not in (adapter.name, f"{adapter.name}@{registry.PRODUCTION}"):
            return Route(stable)
        assert self._reg is not None
        try:
            rollout = self._reg.rollout(adapter.name)
        except registry.RegistryError as e:
            raise from_registry(e) from e
        if rollout is None or rollout.weight <= 0 or rollout.canary == adapter.version:
            return Route(stable)
        try:
            canary = replace(self._resolve(f"{adapter.name}@{rollout.canary}"), arm=CANARY)
        except (AdapterQuarantinedError, AdapterUnderCheckError):  # stable takes it all
            return Route(stable)
        return Route(stable, canary, Split(rollout.weight, f"{adapter.name}#{rollout.id}"))

    def _resolve(self, model: str) -> Target:
        assert self._reg is not None and self.base is not None
        base = self.base
        if model in (base.name, base.digest):
            return Target(base, None)
        try:
            found = self._reg.resolve(model)
            adapter = self._reg.adapter(model) if found.kind == "adapter" else None
        except registry.RegistryError as e:
            raise from_registry(e) from e
        if adapter is None:
            raise ModelNotFoundError(
                f"{model!r} is {a_kind(found.kind)}, not a servable model; this gateway serves "
                f"{base.name!r} and its adapters",
                param="model",
            )
        if adapter.base_model.digest not in (base.digest, self._parent_digest):
            raise InvalidRequestError(
                f"{adapter.ref} was trained on base {adapter.base_model.name!r} "
                f"({adapter.base_model.digest}); this gateway serves {base.name!r} ({base.digest})",
                param="model",
                code="adapter_base_mismatch",
            )
        if adapter.base_model.digest != base.digest:
            self._check_pair(adapter)
        self._check_quarantine(adapter)
        return Target(base, adapter)

    def _check_quarantine(self, adapter: registry.AdapterVersion) -> None:
        reason = adapter.quarantine.reason if adapter.quarantine else None
        reason = reason or self._quarantined.get(adapter.ref)
        if reason is not None:
            raise AdapterQuarantinedError(
                f"{adapter.ref} is quarantined ({reason}); no gateway serves it until a person "
                f"lifts it with `registry quarantine rm {adapter.ref}`",
                param="model",
            )
        held = self._held.get(adapter.ref)
        if held:
            raise AdapterUnderCheckError(
                f"{adapter.ref} is held while it is checked ({held[-1]}); retry shortly",
                param="model",
            )

    def hold(self, target: Target, reason: str) -> None:
        """Refuse `target`'s adapter version here until :meth:`release` (a check runs).
        Holds count: checks of two backends may hold one version; it serves again when
        both have released it."""
        if target.adapter is not None:
            self._held.setdefault(target.adapter.ref, []).append(reason)
            self._cache.clear()

    def release(self, target: Target) -> None:
        """End one hold of `target`'s adapter version (none left: a no-op)."""
        if target.adapter is None:
            return
        held = self._held.get(target.adapter.ref)
        if held:
            held.pop()
            if not held:
                del self._held[target.adapter.ref]
            self._cache.clear()

    async def quarantine(self, target: Target, reason: str) -> None:
        """Quarantine `target`'s adapter version here at once and in the registry (so
        every gateway refuses it); a registry that cannot be written is logged."""
        if target.adapter is None:
            return
        ref = target.adapter.ref
        self._quarantined[ref] = reason
        self._cache.clear()
        try:
            await self.call(partial(self._write_quarantine, ref, reason))
        except Exception:
            log.exception("could not record the quarantine of %s in the registry", ref)
            return
        # Recorded: the registry is the truth now, so `registry quarantine rm` serves it
        # here again too (a local memory would outlive the person's decision).
        self._quarantined.pop(ref, None)
        self._cache.clear()

    def _write_quarantine(self, ref: str, reason: str) -> None:
        assert self._reg is not None
        self._reg.quarantine(ref, reason=reason, who=f"gateway@{socket.gethostname()}")

    def _lineage(self) -> str | None:
        """The digest of the served base's parent when it is a quantized variant;
        adapters trained on the parent may then run on it, pair permitting. A merged
        deployment already holds its one adapter and takes no others."""
        assert self._reg is not None and self.base is not None
        info = self._reg.variant(self.base.name)
        return None if info is None or info.merged else info.parent_digest

    def _check_pair(self, adapter: registry.AdapterVersion) -> None:
        """Serve an adapter on a variant of its base only where that pair passed its gate."""
        assert self._reg is not None and self.base is not None
        variant = self.base.name
        pair = self._reg.pair(adapter, variant)
        override = f"`quantize eval {variant} {adapter.ref} --force`"
        if pair is None:
            raise InvalidRequestError(
                f"{adapter.ref} was trained on {adapter.base_model.name!r} and has not been "
                f"evaluated on its variant {variant!r}; run `quantize eval {variant} "
                f"{adapter.ref}` (or override with {override})",
                param="model",
                code="variant_pair_not_evaluated",
            )
        if not pair.passed:
            raise InvalidRequestError(
                f"{adapter.ref} failed the fidelity gate on variant {variant!r} "
                f"({', '.join(pair.failed_gates)}); serve it on {adapter.base_model.name!r}, "
                f"or override with {override}",
                param="model",
                code="variant_gate_failed",
            )

    async def model_ids(self) -> list[tuple[str, str | None]]:
        """(id, parent) for /v1/models: the base, then every routable adapter ref."""
        return await self.call(self._model_ids)

    def _model_ids(self) -> list[tuple[str, str | None]]:
        assert self._reg is not None and self.base is not None
        base = self.base
        adapters = [
            a
            for a in self._reg.list_adapters()
            if a.quarantine is None and a.ref not in self._quarantined
        ]
        mine = [a for a in adapters if a.base_model.digest == base.digest]
        if self._parent_digest is not None:
            on_variant = self._reg.pairs_on(base.name)
            passed = {p.adapter for p in on_variant if p.passed}
            mine += [
                a
                for a in adapters
                if a.base_model.digest == self._parent_digest and a.ref in passed
            ]
        return [(base.name, None)] + [(ref, base.name) for ref in registry.routable_refs(mine)]

    async def pull(self, ref: str, dest: Path) -> Path:
        assert self._reg is not None
        try:
            return await self.call(self._reg.pull, ref, dest)
        except registry.RegistryError as e:
            raise from_registry(e) from e
