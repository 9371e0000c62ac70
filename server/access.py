"""`x-request-id` on every response, and one access-log line per request that carries it.

A client's `x-request-id` is kept when it is a plausible id (1-128 visible ASCII
characters); otherwise, or when absent, one is made. A plain ASGI middleware: Starlette's
BaseHTTPMiddleware would add a task and a queue to every request.

The lines are the gateway log's own format (`2026-12-07 02:00:13,123 INFO loraport.access:
...`) but written by `AccessLog`, not `logging`: a `logging` call cost the gateway about
60 us of CPU per request where the line's own write cost 20 (bench/README.md, "The access
log's own writer"). The lines of one step of the event loop go out in one write to
stderr at the end of that step, so nothing waits for them and a crash loses at most that
step's lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ID = re.compile(rb"[\x21-\x7e]{1,128}")
HEADER = b"x-request-id"


def request_id(given: bytes | None) -> bytes:
    """The id a request goes by: the client's if plausible, else a new one. Pure but for
    the random part."""
    if given is not None and _ID.fullmatch(given):
        return given
    return os.urandom(16).hex().encode()  # as random as uuid4's hex, a quarter of its cost


class AccessLog:
    """Access lines to `fd` (stderr), batched per step of the running event loop."""

    def __init__(self, fd: int = 2) -> None:
        self._fd = fd
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""

    def line(self, rid: bytes, method: str, path: str, status: int, adapter: bytes,
             ms: float) -> None:  # fmt: skip
        now = time.time()
        second = int(now)
        if second != self._second:  # logging's asctime, formatted once a second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        if not path.isprintable():  # a decoded %0A must not start a forged line
            path = path.encode("unicode_escape").decode("ascii")
        if not self._lines:
            asyncio.get_running_loop().call_soon(self.flush)
        self._lines.append(
            f"{self._stamp},{int((now - second) * 1000):03d} INFO loraport.access: "
            f'{rid.decode()} "{method} {path}" {status} {adapter.decode("latin-1")} {ms:.1f}ms\n'
        )

    def flush(self) -> None:
        if not self._lines:
            return
        view = memoryview("".join(self._lines).encode("utf-8", "replace"))
        self._lines.clear()
        with contextlib.suppress(OSError):  # stderr gone: lines lost, never a request
            while view:  # a pipe may take part of a write
                view = view[os.write(self._fd, view) :]


def given_id(scope: Scope) -> bytes | None:
    """The request's own `x-request-id` header, if it sent one."""
    for k, v in scope["headers"]:
        if k == HEADER:
            return bytes(v)
    return None


class Tagged:
    """`send` with `x-request-id` added to the response's head; it keeps the status and
    the adapter header for the access line."""

    __slots__ = ("adapter", "rid", "send", "status")

    def __init__(self, send: Send, rid: bytes) -> None:
        self.send = send
        self.rid = rid
        self.status = 0
        self.adapter = b"-"

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = [h for h in message.get("headers", []) if h[0] != HEADER]
            headers.append((HEADER, self.rid))
            message["headers"] = headers
            self.adapter = next((v for k, v in headers if k == b"x-loraport-adapter"), b"-")
        await self.send(message)


class RequestIdMiddleware:
    """`x-request-id` on every answer, and its access line (none with `log=None`)."""

    def __init__(self, app: ASGIApp, log: AccessLog | None) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(given_id(scope))
        started = time.perf_counter()
        tagged = Tagged(send, rid)
        try:
            await self.app(scope, receive, tagged)
        finally:
            if self.log is not None:
                ms = (time.perf_counter() - started) * 1000
                status = tagged.status or 499
                self.log.line(rid, scope["method"], scope["path"], status, tagged.adapter, ms)
