"""`create_app(settings)`: the gateway's FastAPI application. Nothing runs at import."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from server import backend_dns, backend_sync, placement, probe
from server.access import HEADER as REQUEST_ID
from server.access import AccessLog, RequestIdMiddleware, Tagged, given_id, request_id
from server.adapters import AdapterCache, AdapterSlots
from server.auth import allowed, authenticate
from server.containment import Containment
from server.errors import (
    BackendUnavailableError,
    GatewayError,
    MethodNotAllowedError,
    RegistryUnavailableError,
    RouteNotFoundError,
    to_gateway_error,
)
from server.metrics import Metrics
from server.protocol import PATHS, Endpoint
from server.resolver import Resolver, Target
from server.serving import Gateway, JsonAnswer, error_response
from server.settings import GatewaySettings
from server.supervisor import Supervisor
from server.vllm_http import VllmBackend

log = logging.getLogger("loraport.gateway")


@dataclass
class Runtime:
    """What the app holds while it runs (exposed as `app.state.runtime` for tests)."""

    settings: GatewaySettings
    metrics: Metrics
    resolver: Resolver
    backends: list[VllmBackend] = field(default_factory=list)
    gateway: Gateway | None = None
    supervisor: Supervisor | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    resolve: backend_dns.Resolve = backend_dns.getaddrinfo
    """How `backends_dns` is resolved (a test may give its own)."""
    cache: AdapterCache | None = None


async def _start(rt: Runtime) -> None:
    s = rt.settings
    if s.cpu_affinity is not None:
        placement.pin_process(os.getpid(), placement.parse_cpus(s.cpu_affinity))
    try:
        await rt.resolver.open(s.base)
    except RegistryUnavailableError as e:
        # Not an exit: the gateway listens, not ready (/ready says why), until it answers.
        log.warning("%s; the gateway waits for it (not ready until then)", e.message)
        rt.tasks.append(asyncio.create_task(_start_when_registry_answers(rt)))
        return
    await _bring_up(rt)


async def _start_when_registry_answers(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(rt.resolver.health.retry_in_s() or 1.0)
        try:
            await rt.resolver.open(rt.settings.base)
            log.info("the registry answers: starting")
            await _bring_up(rt)
            return
        except RegistryUnavailableError:
            continue
        except GatewayError as e:  # it answered, but cannot serve this gateway (yet)
            log.error("the registry answered, but: %s; asking again", e.message)
            await asyncio.sleep(5.0)
        except Exception:  # never leave the gateway unready for good without a word
            log.exception("starting after the registry answered failed; trying again")
            await asyncio.sleep(5.0)


async def _bring_up(rt: Runtime) -> None:
    """Everything that needs the registry's base model: backends, adapters, the watch."""
    s = rt.settings
    base = rt.resolver.base
    assert base is not None
    dns = backend_dns.Name.parse(s.backends_dns) if s.backends_dns else None
    if dns is not None:
        addresses = await backend_dns.resolve(dns, rt.resolve) or []
        rt.backends = [_remote(rt, dns.url_of(a), a) for a in addresses]
    elif s.backends:
        rt.backends = [
            VllmBackend(url, str(i), timeout_s=s.request_timeout_s)
            for i, url in enumerate(s.backends)
        ]
    else:
        model_dir = s.cache_dir / "models" / Target(base, None).digest_hex
        if not model_dir.is_dir():
            model_dir.parent.mkdir(parents=True, exist_ok=True)
            await rt.resolver.pull(base.name, model_dir)
        rt.supervisor = Supervisor(
            s, model_dir.resolve(), base.name, s.cache_dir / "vllm.log", rt.metrics
        )
        rt.backends = [rt.supervisor.backend(s.request_timeout_s)]
        rt.tasks.append(asyncio.create_task(rt.supervisor.run(rt.backends[0])))
    rt.cache = cache = AdapterCache(s.cache_dir / "adapters", rt.resolver)
    slots = [
        AdapterSlots(b, cache, s.max_loaded_adapters, rt.metrics, pulls=s.backends_pull)
        for b in rt.backends
    ]
    restart: dict[str, probe.Restart] = {}
    if rt.supervisor is not None:
        restart["local"] = rt.supervisor.restart
    containment = Containment(rt.resolver, rt.metrics, s.probe_timeout_s, restart)
    containment.watch(slots)
    rt.gateway = Gateway(s, rt.resolver, slots, rt.metrics, containment)
    rt.tasks.append(
        asyncio.create_task(
            probe.watch(
                rt.backends,
                s.probe_interval_s,
                s.probe_timeout_s,
                rt.metrics,
                on_corrupted=containment.corrupted,
                on_clean=containment.clean,
                on_unsure=containment.check,
                wake=rt.gateway.dispatch.backend_lost,
            )
        )
    )
    rt.tasks.append(asyncio.create_task(rt.resolver.watch_forever()))
    if dns is not None:
        follow = backend_dns.follow(
            dns,
            rt.resolve,
            lambda: [b.label for b in rt.backends],
            lambda change: _apply(rt, dns, change),
            s.backends_dns_refresh_s,
        )
        rt.tasks.append(asyncio.create_task(follow))
    if s.remote and s.backends_sync_s > 0:
        sync = backend_sync.sync_forever(rt.gateway.dispatch.slots, s.backends_sync_s)
        rt.tasks.append(asyncio.create_task(sync))


def _remote(rt: Runtime, url: str, label: str) -> VllmBackend:
    return VllmBackend(url, label, timeout_s=rt.settings.request_timeout_s)


def _apply(rt: Runtime, dns: backend_dns.Name, change: backend_dns.Change) -> None:
    """Backends joined and left at `dns`'s name. The lists of backends (`rt.backends`, which
    the probe and the metrics read each round, and `Dispatch.slots`, which routing reads
    for each request) change in place, here only. A new backend is probed before any
    request goes to it (it is not ready until then); one that left takes no new request,
    and its connections close once its requests in flight have ended."""
    gw, cache = rt.gateway, rt.cache
    assert gw is not None and cache is not None
    slots = gw.dispatch.slots
    for address in change.left:
        gone = next(x for x in slots if x.backend.label == address)
        slots.remove(gone)
        rt.backends.remove(gone.backend)
        rt.metrics.backend_up.labels(address).set(0)
        rt.tasks.append(asyncio.create_task(_retire(gone)))
    for address in change.joined:
        backend = _remote(rt, dns.url_of(address), address)
        backend.state.judged(True, "joined: not probed yet")  # no request before a probe
        rt.backends.append(backend)
        s = rt.settings
        slots.append(
            AdapterSlots(backend, cache, s.max_loaded_adapters, rt.metrics, pulls=s.backends_pull)
        )
    gw.containment.watch(slots)
    if change.joined:
        gw.dispatch.backend_lost.set()  # a probe round now, not at the next interval
    log.info("backends at %s: joined %s, left %s", dns.host, change.joined, change.left)


async def _retire(slots: AdapterSlots) -> None:
    """Close a backend that left once nothing of this gateway uses it any more."""
    try:
        while slots.busy:
            await asyncio.sleep(0.1)
    finally:
        await slots.backend.aclose()


async def _stop(rt: Runtime) -> None:
    for task in rt.tasks:
        task.cancel()
    for task in rt.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if rt.supervisor is not None:
        await rt.supervisor.stop()
    for b in rt.backends:
        await b.aclose()
    await rt.resolver.close()


async def _engine_gauges(rt: Runtime) -> None:
    """vLLM's queue depth and KV-cache use, next to the gateway's own series."""
    backends = list(rt.backends)  # with backends_dns the list may change meanwhile
    stats = await asyncio.gather(*(b.engine_stats(timeout_s=1.0) for b in backends))
    m = rt.metrics
    m.registry_stale.set(rt.resolver.health.stale_s(time.monotonic()))
    for backend, st in zip(backends, stats, strict=True):
        if st is not None:
            m.backend_requests_running.labels(backend.label).set(st.running)
            m.backend_requests_waiting.labels(backend.label).set(st.waiting)
            m.backend_kv_cache_usage.labels(backend.label).set(st.kv_cache_usage)


HOT_PATHS: dict[str, Endpoint] = {v: k for k, v in PATHS.items()}


class GatewayApp:
    """The ASGI app `gateway serve` runs. `POST /v1/chat/completions` and `POST
    /v1/completions` go straight to the gateway, with their `x-request-id` and access line
    handled here; everything else goes on to FastAPI (`api`) behind RequestIdMiddleware.
    A completion passes through no middleware (bench/README.md, "The gateway's own CPU
    per request" and "A lean request path")."""

    def __init__(
        self, api: FastAPI, gateway: Callable[[], Gateway], access: AccessLog | None
    ) -> None:
        self.api = api
        self.state = api.state  # `state.runtime`, for tests
        self._gateway = gateway
        self._access = access
        self._rest = RequestIdMiddleware(api, access)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = HOT_PATHS.get(scope["path"])
            if endpoint is not None:
                await self._completion(scope, receive, send, endpoint)
                return
        await self._rest(scope, receive, send)

    async def _completion(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint
    ) -> None:
        started = time.perf_counter()
        rid = request_id(given_id(scope))
        status, adapter = 0, b"-"
        try:
            try:
                answer = await self._gateway().serve(scope, receive, endpoint)
            except GatewayError as e:  # not started yet
                answer = error_response(e)
            if type(answer) is JsonAnswer:  # the common answer: its head is known here
                answer.headers.append((REQUEST_ID, rid))
                status, adapter = 200, answer.adapter
                await answer(scope, receive, send)
            else:
                tagged = Tagged(send, rid)
                try:
                    await answer(scope, receive, tagged)
                finally:
                    status, adapter = tagged.status, tagged.adapter
        finally:
            if self._access is not None:
                ms = (time.perf_counter() - started) * 1000
                self._access.line(rid, "POST", scope["path"], status or 499, adapter, ms)


def create_app(
    settings: GatewaySettings, resolve: backend_dns.Resolve = backend_dns.getaddrinfo
) -> GatewayApp:
    """`resolve`: how `backends_dns` is resolved (getaddrinfo; a test may give its own)."""
    resolver = Resolver(
        settings.registry,
        timeout_s=settings.registry_timeout_s,
        pull_timeout_s=settings.registry_pull_timeout_s,
        watch_s=settings.registry_watch_s,
    )
    rt = Runtime(settings, Metrics(), resolver, resolve=resolve)
    access = AccessLog() if settings.access_log else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _start(rt)
        try:
            yield
        finally:
            await _stop(rt)
            if access is not None:
                access.flush()

    app = FastAPI(title="loraport gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = rt

    def gateway() -> Gateway:
        if rt.gateway is None:  # started while the registry was down: still waiting
            if not rt.resolver.is_open:
                raise RegistryUnavailableError(
                    "the gateway is waiting for its registry to answer; retry shortly"
                )
            raise BackendUnavailableError("the gateway is starting; retry shortly")
        return rt.gateway

    @app.exception_handler(GatewayError)
    async def on_gateway_error(request: Request, e: GatewayError) -> Response:
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, e: StarletteHTTPException) -> Response:
        if e.status_code == 405:
            return error_response(MethodNotAllowedError(f"{request.method} not allowed here"))
        return error_response(RouteNotFoundError(f"no route {request.method} {request.url.path}"))

    @app.exception_handler(Exception)
    async def on_any_error(request: Request, e: Exception) -> Response:
        return error_response(to_gateway_error(e))

    async def not_here(request: Request) -> Response:  # POST never gets here (GatewayApp)
        raise MethodNotAllowedError(f"{request.method} not allowed here")

    # Registered so that other methods on the hot paths get the 405 envelope.
    for path in HOT_PATHS:
        app.router.add_route(path, not_here, methods=["POST"])

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        key = authenticate(settings.api_keys, request.headers.get("authorization"))
        created = int(time.time())
        data = [
            {
                "id": model_id, "object": "model", "created": created,
                "owned_by": "loraport", "root": parent or model_id, "parent": parent,
            }
            for model_id, parent in await rt.resolver.model_ids()
            if allowed(key, model_id.split("@")[0])
        ]  # fmt: skip
        return JSONResponse({"object": "list", "data": data})

    @app.get("/metrics")
    async def metrics() -> Response:
        await _engine_gauges(rt)
        return Response(rt.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        # No URLs, paths or log lines: /ready answers anyone; the gateway log has the rest.
        states = [
            {"backend": b.label, "ready": b.state.ready, "detail": b.state.detail}
            for b in rt.backends
        ]
        ok = rt.gateway is not None and any(b.state.ready for b in rt.backends)
        # The registry down does not make a started gateway unready: it serves what it
        # knows; the detail says how stale (docs/gateway.md, "The registry down").
        detail = {
            "ready": ok,
            "backends": states,
            "registry": rt.resolver.health.detail(time.monotonic()),
        }
        if not rt.resolver.is_open:
            detail["waiting_for"] = "registry"
        body = json.dumps(detail)
        return Response(body, status_code=200 if ok else 503, media_type="application/json")

    return GatewayApp(app, gateway, access)
