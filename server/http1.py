"""A lean HTTP/1.1 client for the hot path's whole answers: one POST, one answer read
whole, over a pool of keep-alive connections (TCP, TLS or a Unix socket).

Why not aiohttp here: the gateway's CPU per request fell from 640 to 440 us at
concurrency 1 and from 350 to 210 us at 16 with this client in aiohttp's place
(bench/gateway_cpu.py; bench/README.md, "A lean client for whole answers"), and on a
2-core host that CPU comes out of the core vLLM's API server needs. Streams, probes,
metrics and adapter loads stay on aiohttp (server/vllm_http.py): they are rare, or their
cost is per token, not per request.

What it keeps of aiohttp's behaviour, each tested in tests/server/test_http1.py:
- a request that cannot have reached the server (connect refused, no socket file, a
  connect that timed out) is `Http1Error(sent=False)`: safe to send elsewhere;
- a pooled connection idle for `idle_s` (3 s, under uvicorn's 5 s keep-alive) is not
  reused, so the server's idle close never races a request's write;
- the answer is bounded by `timeout_s`; on timeout, cancellation (the client left) or a
  broken answer the connection is closed, and vLLM aborts the request;
- at most `limit` connections are open at once; more requests wait for one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import cast

import httptools


class Http1Error(Exception):
    """The exchange failed. `sent`: the request may have reached the server."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one exchange at a time (HTTP/1.1, no pipelining)."""

    def __init__(self, forget: Callable[[_Connection], None]) -> None:
        self._forget = forget
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.reusable = False
        self.idle_since = 0.0
        self.lost = False
        self._status = 0
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.fail(Http1Error(f"the server's answer is not HTTP/1.1: {e}", sent=True))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self._parser.should_keep_alive()
        waiter, self.waiter, body, self._body = self.waiter, None, self._body, []
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, b"".join(body)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._forget(self)
        why = f": {exc}" if exc else ""
        self.fail(Http1Error(f"the server closed the connection before answering{why}", sent=True))

    def timed_out(self) -> None:
        self.fail(TimeoutError())

    def fail(self, error: BaseException) -> None:
        """End the exchange in progress with `error` and drop the connection."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections to one server. `host` and `port` are where to connect
    (ignored with `unix_socket`); `authority` is the Host header."""

    def __init__(
        self,
        authority: str,
        *,
        host: str = "",
        port: int = 0,
        unix_socket: str | None = None,
        tls: ssl.SSLContext | None = None,
        limit: int = 256,
        idle_s: float = 3.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._host, self._port, self._unix_socket, self._tls = host, port, unix_socket, tls
        self._head = f"HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n"
        self._limit = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._idle_s, self._connect_timeout_s = idle_s, connect_timeout_s

    async def post(self, path: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        """(status, body) of the server's answer to `body` POSTed to `path`."""
        async with self._limit:
            conn = self._pooled() or await self._connect()
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            conn.waiter = waiter
            head = f"POST {path} {self._head}Content-Length: {len(body)}\r\n\r\n".encode()
            assert conn.transport is not None
            conn.transport.write(head + body)
            timer = loop.call_later(timeout_s, conn.timed_out)
            try:
                answer = await waiter
            except BaseException:  # timeout, a broken answer, or the caller cancelled
                conn.close()
                raise
            finally:
                timer.cancel()
            if conn.reusable and not conn.lost:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return answer

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._idle.clear()

    def _new(self) -> _Connection:
        return _Connection(self._open.discard)

    def _pooled(self) -> _Connection | None:
        """The most recently used idle connection still fit to carry a request."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            transport = conn.transport
            fit = not conn.lost and transport is not None and not transport.is_closing()
            if fit and now - conn.idle_since < self._idle_s:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if self._unix_socket is not None:
                    _, conn = await loop.create_unix_connection(self._new, self._unix_socket)
                else:
                    _, conn = await loop.create_connection(
                        self._new, self._host, self._port, ssl=self._tls
                    )
        except (OSError, TimeoutError) as e:
            where = self._unix_socket or f"{self._host}:{self._port}"
            raise Http1Error(f"cannot connect to {where}: {e or 'timed out'}", sent=False) from e
        self._open.add(conn)
        return conn
