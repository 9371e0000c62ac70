"""The registry service's outermost layer: every request counted and timed by operation
and status, and an unexpected error answered in the envelope and logged once."""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.types import Message, Receive, Send
from starlette.types import Scope as AsgiScope

from registry.service.context import UNEXPECTED, error_response, log
from registry.service.metrics import ServiceMetrics


class MeasuredApp:
    """Counts and times every request by operation and status (plain ASGI: Starlette's
    BaseHTTPMiddleware would put a queue between every upload chunk and the handler)."""

    def __init__(self, app: FastAPI, metrics: ServiceMetrics, known: frozenset[str]) -> None:
        self.app, self.metrics, self.known = app, metrics, known
        self.state = app.state

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        op = str(scope["path"]).removeprefix("/v1/").split("/")[0]
        op = op if op in self.known else "other"
        status = 499

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception as exc:
            # Starlette answered it with the envelope, then raised it again for the server
            # to log; uvicorn would then close the connection under the answer (the client
            # sees a reset). Log it here, once, without the raw path (a client's text).
            log.error("%s %s: unexpected error", scope["method"], op, exc_info=exc)
            if status == 499:
                status = 500
                await error_response(UNEXPECTED)(scope, receive, send)
        finally:
            self.metrics.observe(op, str(status), time.perf_counter() - started)
