"""Issue 22's experiment, not a product path: the gateway inside vLLM's own API server
process, as ASGI middleware (`vllm serve ... --middleware inprocess_gateway.Middleware`,
this folder and the repository on PYTHONPATH, the gateway's GATEWAY_* settings in the
environment with `GATEWAY_BACKENDS=["http://in-process"]`).

The whole gateway app (`server.app.create_app`: x-request-id and the access log, the hot
routes, auth, resolve, admission, adapters, containment, metrics) runs unchanged; only its
backend differs: `InProcessBackend` calls vLLM's ASGI app in the same event loop instead
of sending HTTP to it, so the hop (a second HTTP server, a client, two socket round
trips, a second process's wake-up) is gone. Requests:

- `POST /v1/chat/completions`, `/v1/completions`: the gateway;
- `/gw/PATH`: the gateway's own PATH (`/gw/ready`, `/gw/metrics`); the first request
  here starts it (the probe, the registry watch) in vLLM's event loop;
- `/direct/PATH`: vLLM's own PATH, untouched (the bench's baseline);
- anything else: vLLM.

Non-streamed answers only (what bench/gateway_overhead.py measures); a stream is
refused. See bench/README.md, "The gateway inside vLLM's process".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

import server.app
from server.errors import BackendError, BackendUnavailableError
from server.settings import GatewaySettings
from server.vllm_http import Answer, BackendState, EngineStats, VllmBackend, parse_engine_stats

_COPIED = ("app", "state", "asgi", "http_version", "scheme", "server", "client", "root_path")


class InProcessBackend(VllmBackend):
    """VllmBackend's calls made on vLLM's ASGI app directly, in this event loop."""

    def __init__(self, vllm: ASGIApp, template: dict[str, Any], url: str, label: str, **_: Any):
        self.url, self.label, self.state = url, label, BackendState()
        self._vllm, self._template = vllm, template

    async def aclose(self) -> None:
        return None

    async def health(self) -> bool:
        try:
            return (await self._send("GET", "/health")).status_code == 200
        except BackendError:
            return False

    async def engine_stats(self, timeout_s: float = 5.0) -> EngineStats | None:
        answer = await self._send("GET", "/metrics")
        return parse_engine_stats(answer.text) if answer.status_code == 200 else None

    @contextlib.asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        raise BackendError("the in-process experiment answers whole answers only")
        yield  # pragma: no cover

    async def _send(self, method: str, path: str, body: Any = None) -> Answer:
        if not self._template:
            raise BackendUnavailableError("no request has reached vLLM's app yet")
        data = b"" if body is None else server.vllm_http._encode(body)
        scope = {
            **self._template,
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [
                (b"host", b"in-process"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
        given = False
        parked = asyncio.Event()  # never set: the call is cancelled if the client leaves

        async def receive() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": data, "more_body": False}
            await parked.wait()
            return {"type": "http.disconnect"}

        status, chunks = 500, []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self._vllm(scope, receive, send)
        except Exception as e:  # what a TCP client would see as a 500
            raise BackendError(f"vLLM's app failed: {e!r}") from e
        return Answer(status, b"".join(chunks))


class Middleware:
    """vLLM's `--middleware` class: built by vLLM with its app, before its server starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.vllm = app
        self.template: dict[str, Any] = {}
        settings = GatewaySettings()
        handler = logging.StreamHandler()  # as `gateway serve` logs (server/cli.py)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("loraport").addHandler(handler)
        logging.getLogger("loraport").setLevel(logging.WARNING)
        logging.getLogger("loraport.access").setLevel(
            logging.INFO if settings.access_log else logging.WARNING
        )
        server.app.VllmBackend = (  # type: ignore[attr-defined,assignment,misc]
            lambda url, label, **kw: InProcessBackend(app, self.template, url, label)
        )
        self.gateway = server.app.create_app(settings)
        self.started: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.vllm(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/direct/"):
            await self.vllm(_under(scope, path[7:]), receive, send)
            return
        if not self.template:
            self.template.update({k: scope[k] for k in _COPIED if k in scope})
        if path in server.app.HOT_PATHS:
            await self.gateway(scope, receive, send)
        elif path.startswith("/gw/"):
            if self.started is None:
                rt = self.gateway.state.runtime
                self.started = asyncio.ensure_future(server.app._start(rt))
            await self.gateway(_under(scope, path[3:]), receive, send)
        else:
            await self.vllm(scope, receive, send)


def _under(scope: Scope, path: str) -> Scope:
    return {**scope, "path": path, "raw_path": path.encode()}
