"""How the service holds a connection: a request's head must arrive in time, whole.

uvicorn times out only an idle kept-alive connection, and its timer stops at the first
byte: a client that opens a connection and sends a request head a byte at a time
(slowloris) holds it, and a worker's file descriptor, for ever. :func:`guarded_h11` is
uvicorn's h11 protocol with one timer more: from the moment a connection opens, or a
response ends, the next request head has ``head_timeout_s`` to arrive, else the
connection is closed (so does one still trickling the body of a request already answered
without reading it). (The body's own limits are the routes' job: ``Service.stream``.)
The service runs on h11, always, rather than on uvicorn's "auto" choice (httptools where
installed): one protocol, the one the tests exercise, whose head size
``h11_max_incomplete_event_size`` bounds. Measured on a 2-core machine, 192 MiB uploads:
223-266 MiB/s on h11 against 232-294 MiB/s on httptools, runs alternated (within the
noise); downloads alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class _GuardedH11(H11Protocol):
    head_timeout_s = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._serving():
            self._head_arrived()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._serving():
            self._await_head()

    def _serving(self) -> bool:
        """A request is being answered (its head came; its response is not done)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _await_head(self) -> None:
        self._head_arrived()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _head_arrived(self) -> None:
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


def guarded_h11(head_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head is late."""
    return type("GuardedH11", (_GuardedH11,), {"head_timeout_s": head_timeout_s})
