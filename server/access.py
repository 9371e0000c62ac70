"""`x-request-id` on every response, and one access-log line per request that carries it.

A client's `x-request-id` is kept when it is a plausible id (1-128 visible ASCII
characters); otherwise, or when absent, one is made. A plain ASGI middleware: Starlette's
BaseHTTPMiddleware would add a task and a queue to every request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("loraport.access")
_ID = re.compile(rb"[\x21-\x7e]{1,128}")
HEADER = b"x-request-id"


def request_id(given: bytes | None) -> bytes:
    """The id a request goes by: the client's if plausible, else a new one. Pure but for
    the random part."""
    if given is not None and _ID.fullmatch(given):
        return given
    return uuid.uuid4().hex.encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == HEADER), None)
        rid = request_id(given)
        scope.setdefault("state", {})["request_id"] = rid.decode()
        started = time.perf_counter()
        status = 0
        adapter = b"-"

        async def tagged(message: Message) -> None:
            nonlocal status, adapter
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0] != HEADER]
                headers.append((HEADER, rid))
                message["headers"] = headers
                adapter = next((v for k, v in headers if k == b"x-loraport-adapter"), b"-")
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    '%s "%s %s" %d %s %.1fms',
                    rid.decode(), scope["method"], scope["path"], status or 499,
                    adapter.decode("latin-1"), (time.perf_counter() - started) * 1000,
                )  # fmt: skip
