"""From a request's `model` field to one concrete target, through the registry.

The registry owns the ref grammar (NAME, NAME@N, NAME@ALIAS, sha256:...); the gateway
asks it and caches answers until the registry's change token moves. One watch thread
waits for that token (`wait_for_change`: a long-poll on a registry service, 200 ms polls of
a directory), so a push, alias move or canary step is seen within about a second and a
request asks the registry nothing when its answer is cached. Registry calls run off the
event loop on two pools: lookups (a few threads) and pulls (their own two, so a large
pull never blocks a lookup); every call has a timeout. Both registry forms are
thread-safe (the directory's SQLite connection is shared under a lock), so one handle
serves every thread.

When the registry does not answer, names resolved before keep serving their last known
good route (server/route_cache.py), `health` says how stale that is
(server/registry_health.py), and a name never resolved is a 503 `registry_unavailable`.

This is the one module of `server` that imports `registry`: every registry failure is
turned into a gateway error here (`from_registry`), by the status the registry's own
error table gives it, so the rest of the gateway never sees a registry type.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, replace
from functools import cached_property, partial
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
    RegistryUnavailableError,
)
from server.metrics import Series
from server.registry_calls import RegistryCalls
from server.route_cache import Version, VersionedCache, answer

T = TypeVar("T")
log = logging.getLogger("loraport.gateway")
ROUTE_CACHE_SIZE = 4096
_MODELS_KEY = ""  # the one entry of the /v1/models cache


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
    if isinstance(e, registry.RegistryUnavailableError):
        return RegistryUnavailableError(f"the registry does not answer: {message}")
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


def _registry_error(e: Exception) -> GatewayError | None:
    """A registry error raised on a registry thread, as a gateway error (None: not one)."""
    return from_registry(e) if isinstance(e, registry.RegistryError) else None


class RegistryUnusable(Exception):
    """The registry cannot serve this gateway at all (checked before the server starts)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_registry(location: str | None, base_ref: str | None) -> dict[str, Any] | None:
    """Fail fast, with the registry's message and exit code, before any server starts.
    Returns the base model's ``config.json``, for :mod:`server.engine_support`; None when
    the registry does not answer (transient: the gateway starts, not ready, and waits)."""
    try:
        with registry.open(location, create=False) as reg:
            return dict(registry.pick_base(reg, base_ref).architecture)
    except registry.RegistryUnavailableError:
        return None
    except registry.RegistryError as e:
        raise RegistryUnusable(str(e), e.exit_code) from e


def parse_lora_name(name: str) -> tuple[str, str] | None:
    """(adapter name, version) of a stable LoRA name this gateway (or another) loaded."""
    parsed = registry.parse_lora_name(name)
    return None if parsed is None else (parsed.name, str(parsed.version))


@dataclass(frozen=True)
class Target:
    """What serves one request: the base model alone, or one adapter version on it.
    Immutable, and held by the route cache: what the request path reads of it (`ref`,
    `name`, `series`, `lora_name`) is worked out once."""

    base: registry.BaseModel
    adapter: registry.AdapterVersion | None
    arm: str = STABLE

    @cached_property
    def ref(self) -> str:
        return self.adapter.ref if self.adapter else self.base.name

    @cached_property
    def name(self) -> str:
        return self.adapter.name if self.adapter else self.base.name

    @cached_property
    def series(self) -> Series:
        if self.adapter is None:
            return Series("base", "-", self.arm)
        return Series(self.adapter.name, str(self.adapter.version), self.arm)

    @cached_property
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
    def __init__(
        self,
        location: str | None,
        *,
        timeout_s: float = 10.0,
        pull_timeout_s: float = 600.0,
        watch_s: float = 10.0,
    ) -> None:
        self._location = location
        self._calls = RegistryCalls(
            _registry_error, timeout_s=timeout_s, pull_timeout_s=pull_timeout_s, watch_s=watch_s
        )
        self.health = self._calls.health
        self._reg: registry.Registry | None = None
        # Bounded: keys are client input. Refs are canonical (the registry refuses other
        # spellings), so one version has a handful of keys, but unknown names are many.
        self._cache: VersionedCache[Route] = VersionedCache(ROUTE_CACHE_SIZE)
        self._models: VersionedCache[list[tuple[str, str | None]]] = VersionedCache(1)
        self._pending: dict[tuple[str, Version], asyncio.Future[Route]] = {}
        self._token: int | None = None
        self._epoch = 0  # bumped by this gateway's own holds and quarantines
        self._current: Version = (-1, 0)  # (token, epoch): what a current answer carries
        self.base: registry.BaseModel | None = None
        self._parent_digest: str | None = None
        # Versions this gateway quarantined but could not record in the registry (refused
        # here anyway; until this gateway restarts);
        # and versions held while containment replays them (server/containment.py).
        self._quarantined: dict[str, str] = {}
        self._held: dict[str, list[str]] = {}

    @property
    def is_open(self) -> bool:
        """The registry answered once: the base model and the change token are known."""
        return self._token is not None

    async def open(self, base_ref: str | None) -> registry.BaseModel:
        """Open the registry and pick the base model this gateway serves. A registry that
        does not answer raises RegistryUnavailableError: call again later."""
        if self._reg is None:
            settings = registry.RegistrySettings(timeout_s=self._calls.timeout_s)
            self._reg = await self._calls.lookup(
                partial(registry.open, self._location, settings=settings, create=False)
            )
        self.base = await self._calls.lookup(registry.pick_base, self._reg, base_ref)
        self._parent_digest = await self._calls.lookup(self._lineage)
        self._take(await self._calls.lookup(self._reg.change_token))
        return self.base

    async def close(self) -> None:
        await self._calls.close(self._reg.close if self._reg is not None else None)

    def _version(self) -> Version:
        return self._current

    def _local_change(self) -> None:
        """A hold, release or quarantine here: every cached route is asked again."""
        self._epoch += 1
        self._current = (self._current[0], self._epoch)

    def _moved(self, token: int) -> bool:
        """Take the registry's token; entries of older tokens are asked again on use."""
        if token == self._token:
            return False
        self._take(token)
        return True

    def _take(self, token: int) -> None:
        self._token = token
        self._current = (token, self._epoch)

    async def refresh(self) -> bool:
        """Ask the change token once and take it. True when the registry changed."""
        assert self._reg is not None
        return self._moved(await self._calls.lookup(self._reg.change_token))

    async def watch_forever(self) -> None:
        """Follow the registry's change token for as long as the gateway runs."""
        assert self._reg is not None
        await self._calls.watch(self._reg, lambda: self._version()[0], self._moved)

    async def resolve(self, model: str, key: str | None = None) -> Target:
        """The target for `model`; `key` (see `server.canary.sticky_key`) picks the arm
        where a rollout splits `model`."""
        return (await self.route(model)).pick(key)

    async def route(self, model: str) -> Route:
        entry = self._cache.get(model)
        if entry is not None and entry.version == self._current:
            return entry.value  # the common path: one lookup in memory, nothing asked
        return await answer(
            self._cache,
            model,
            self._version(),
            self.health.up,
            partial(self._lookup, model),
            self._still_local_ok,
            f"route for {model!r}",
        )

    async def _lookup(self, model: str) -> Route:
        """Ask the registry for `model`'s route; concurrent first requests share one ask."""
        version = self._version()
        key = (model, version)
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._calls.lookup(self._route, model))
            self._pending[key] = task
            task.add_done_callback(partial(self._settled, key, version))
        return await asyncio.shield(task)

    def _settled(
        self, key: tuple[str, Version], version: Version, task: asyncio.Future[Route]
    ) -> None:
        self._pending.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        self._cache.put(key[0], version, task.result())

    def _still_local_ok(self, route: Route) -> Route:
        """A last known good route, checked against this gateway's own holds and
        quarantines (those never wait for the registry)."""
        if route.stable.adapter is not None:
            self._check_local(route.stable.adapter)
        if route.canary is not None and route.canary.adapter is not None:
            try:
                self._check_local(route.canary.adapter)
            except GatewayError:
                return Route(route.stable)
        return route

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
            # One call for an adapter ref (the common case); only a ref that is not an
            # adapter costs a second, to say what it is.
            adapter = self._reg.adapter(model)
        except registry.RefNotFoundError as e:
            raise self._not_servable(model, e) from e
        except registry.RegistryError as e:
            raise from_registry(e) from e
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

    def _not_servable(self, model: str, missing: registry.RefNotFoundError) -> GatewayError:
        assert self._reg is not None and self.base is not None
        try:
            found = self._reg.resolve(model)
        except registry.RegistryError as e:
            return from_registry(e)
        if found.kind == "adapter":  # it became one in between: the first answer stands
            return from_registry(missing)
        return ModelNotFoundError(
            f"{model!r} is {a_kind(found.kind)}, not a servable model; this gateway serves "
            f"{self.base.name!r} and its adapters",
            param="model",
        )

    def _check_quarantine(self, adapter: registry.AdapterVersion) -> None:
        if adapter.quarantine is not None:
            raise AdapterQuarantinedError(
                f"{adapter.ref} is quarantined ({adapter.quarantine.reason}); no gateway "
                f"serves it until a person lifts it with `registry quarantine rm "
                f"{adapter.ref}`",
                param="model",
            )
        self._check_local(adapter)

    def _check_local(self, adapter: registry.AdapterVersion) -> None:
        """This gateway's own refusals: a quarantine it could not record, and holds."""
        reason = self._quarantined.get(adapter.ref)
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
            self._local_change()

    def release(self, target: Target) -> None:
        """End one hold of `target`'s adapter version (none left: a no-op)."""
        if target.adapter is None:
            return
        held = self._held.get(target.adapter.ref)
        if held:
            held.pop()
            if not held:
                del self._held[target.adapter.ref]
            self._local_change()

    async def quarantine(self, target: Target, reason: str) -> None:
        """Quarantine `target`'s adapter version here at once and in the registry (so
        every gateway refuses it); a registry that cannot be written is logged."""
        if target.adapter is None:
            return
        ref = target.adapter.ref
        self._quarantined[ref] = reason
        self._local_change()
        try:
            await self._calls.lookup(self._write_quarantine, ref, reason)
        except Exception:
            log.exception("could not record the quarantine of %s in the registry", ref)
            return
        # Recorded: the registry is the truth now, so `registry quarantine rm` serves it
        # here again too (a local memory would outlive the person's decision).
        self._quarantined.pop(ref, None)
        self._local_change()

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
                f"{adapter.ref}` (or `quantize eval --pending`, which measures every pair "
                f"left; override with {override})",
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
        """(id, parent) for /v1/models: the base, then every routable adapter ref; cached
        like routes (until the registry changes; the last list while it is down)."""
        return await answer(
            self._models,
            _MODELS_KEY,
            self._version() if self.is_open else None,
            self.health.up and self.is_open,
            self._ask_model_ids,
            lambda ids: [(i, p) for i, p in ids if i not in self._quarantined],
            "model list",
        )

    async def _ask_model_ids(self) -> list[tuple[str, str | None]]:
        version = self._version()
        ids = await self._calls.lookup(self._model_ids)
        self._models.put(_MODELS_KEY, version, ids)
        return ids

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
        """Materialise `ref` at `dest` on the pull pool (never in a lookup's way)."""
        assert self._reg is not None
        return await self._calls.pull(self._reg.pull, ref, dest)
