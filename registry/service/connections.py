"""How the service holds a connection: a request's head must arrive in time, whole, and
small.

uvicorn times out only an idle kept-alive connection, and its timer stops at the first
byte: a client that opens a connection and sends a request head a byte at a time
(slowloris) holds it, and a worker's file descriptor, for ever. :func:`guarded` is
uvicorn's HTTP protocol with one timer more: from the moment a connection opens, or a
response ends, the next request head has ``head_timeout_s`` to arrive, else the
connection is closed (so does one still trickling the body of a request already answered
without reading it). A head over :data:`MAX_HEAD_BYTES` is cut off too (httptools, unlike
h11, bounds no head size). The body's own limits are the routes' job
(``Service.stream``).

The protocol is httptools where it is installed (it is pinned: requirements/cpu.lock),
h11 otherwise: one guard for both. Measured on this 2-core machine with a bare ASGI app
that only counts the bytes, 192 MiB uploads from httpx took 0.26-0.31 s on httptools and
0.39-0.44 s on h11 (five runs each, quiet machine): the receive path is most of an HTTP
push's cost, so the faster parser is worth the guard's few lines.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    _BASE: type[Any] = HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is pinned
    _BASE = H11Protocol

#: The most bytes a request head may take (h11's own bound, given to both parsers).
MAX_HEAD_BYTES = 64 * 1024


class _Guard:
    """The timer and the size bound, over either of uvicorn's protocols (mixed in first)."""

    head_timeout_s = 60.0
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    logger: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        waiting = not self._serving()
        super().data_received(data)  # type: ignore[misc]
        if self._serving():
            self._head_arrived()
        elif waiting and not self.transport.is_closing():
            self._head_bytes += len(data)  # all of it: the head has not ended yet
            if self._head_bytes > MAX_HEAD_BYTES:
                self.logger.warning("closed a connection whose request head is too large")
                self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing() and not self._serving():
            self._await_head()

    def _serving(self) -> bool:
        """A request is being answered (its head came; its response is not done)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _await_head(self) -> None:
        self._head_arrived()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _head_arrived(self) -> None:
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        # Nothing is being answered: the client is trickling a head, or the rest of a
        # body nobody reads (a GET that declared 10 GB), or nothing. Either way: close.
        self._head_timer = None
        if not self._serving() and not self.transport.is_closing():
            self.logger.warning("closed a connection whose request head did not arrive in time")
            self.transport.close()


def guarded(head_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's protocol (httptools, else h11), closing a connection whose request head
    is late or too large."""
    return type("Guarded", (_Guard, _BASE), {"head_timeout_s": head_timeout_s})
