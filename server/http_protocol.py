"""uvicorn's HTTP/1.1 protocol (httptools), with a response's head and body in one write.

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and its body at `http.response.body`: two writes, so two TCP
segments (uvloop sets TCP_NODELAY), and a client woken twice. On a small host the client
shares a core with the gateway: woken by the head, it runs, parses it, finds no body and
sleeps again, and only then does the gateway write the body. With this and the two
changes made beside it, what the gateway adds between vLLM's answer and the client
holding it fell from 794 to 300 us (bench/gateway_trace.py; bench/README.md, "One write
per answer").

Here a head is held until the next write on the connection (then both go in one), or until
the end of the event loop's current step (`call_soon`), whichever comes first: a whole
JSON answer, whose body follows its head in the same step, leaves in one write; a stream's
head still leaves at once, before its first chunk is awaited. Nothing is reordered or
dropped: a close writes what is held first.

It also tells the request path when its client leaves, without a task of its own per
request (the `DISCONNECT` extension in each request's scope: `watch`, `unwatch`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "
DISCONNECT = "loraport.disconnect"
"""The key, in a request's `scope["extensions"]`, of its connection (`OneWriteProtocol`):
`watch(lost)` until `unwatch()`."""


class HeadHoldingTransport:
    """Passes every call through to `transport`, but holds a response head (a write that
    starts with a status line, when nothing is held) until the next write or the end of
    the loop's step."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(_HEAD):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write what is held, if anything (and the connection is still open)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, ...
        return getattr(self._transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`HeadHoldingTransport`
    (`uvicorn.Config(http=OneWriteProtocol)`). Flow control and addresses still use the
    real transport.

    Each request's scope names its connection under `extensions[DISCONNECT]`: a request
    waiting for vLLM `watch`es it instead of awaiting `receive()` in a task of its own
    (bench/README.md, "A lean request path")."""

    _lost: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = HeadHoldingTransport(transport, self.loop)  # type: ignore[assignment]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {DISCONNECT: self}  # type: ignore[dict-item]  # ASGI types each extension as a dict

    def watch(self, lost: Callable[[], None]) -> bool:
        """Call `lost` once if the client leaves before `unwatch()`. False (and no call):
        it has already left. Reading resumes, as uvicorn's `receive()` would: a paused
        connection would not see its peer close."""
        if self.parser is None or self.transport.is_closing():  # connection_lost ran
            return False
        self._lost = lost
        if self.flow is not None:
            self.flow.resume_reading()
        return True

    def unwatch(self) -> None:
        self._lost = None

    def connection_lost(self, exc: Exception | None) -> None:
        lost, self._lost = self._lost, None
        super().connection_lost(exc)
        if lost is not None:
            lost()
