"""The lean client for whole answers (server/http1.py) against small asyncio servers that
behave, and misbehave, on purpose; real vLLM behind it is tested in the other modules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.http1 import Http1Error, Http1Pool
from server.supervisor import free_port

ANSWER = b'{"ok": true}'
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n" + ANSWER


Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


async def client_leaves(reader: asyncio.StreamReader) -> None:
    """What vLLM's server does while it generates: it notices its client leave (EOF)."""
    if await asyncio.wait_for(reader.read(1), 5) == b"":
        raise ConnectionResetError("the client left")


@dataclass
class Server:
    """Counts connections and requests; `reply` answers each request it reads whole."""

    reply: Reply
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    open_now: int = 0
    most_open: int = 0
    closed_by_client: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                await self.reply(reader, writer, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
        finally:
            self.open_now -= 1
            writer.close()


async def write_and_close(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    writer.close()


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(OK)


def run(
    reply: Reply,
    client: Callable[[Http1Pool, Server], Awaitable[None]],
    *,
    idle_s: float = 3.0,
    limit: int = 256,
) -> Server:
    server = Server(reply)

    async def go() -> None:
        port = free_port()
        srv = await asyncio.start_server(server.handle, "127.0.0.1", port)
        pool = Http1Pool(
            f"127.0.0.1:{port}", host="127.0.0.1", port=port, idle_s=idle_s, limit=limit
        )
        try:
            await client(pool, server)
        finally:
            await pool.aclose()
            srv.close()
            await asyncio.sleep(0.05)  # let the server see the closes

    asyncio.run(go())
    return server


def test_answers_reuse_one_connection_and_send_what_a_server_expects() -> None:
    async def client(pool: Http1Pool, server: Server) -> None:
        for _ in range(5):
            assert await pool.post("/v1/chat/completions", b'{"a": 1}', 5) == (200, ANSWER)

    server = run(ok, client)
    assert server.connections == 1 and len(server.requests) == 5
    head = server.requests[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"Content-Length: 8" in head and any(h.startswith(b"Host: 127.0.0.1:") for h in head)
    assert server.requests[0].endswith(b'\r\n\r\n{"a": 1}')


def test_a_connection_idle_too_long_is_not_reused() -> None:
    """Dropped before the server's own idle close (uvicorn: 5 s) can race a write."""

    async def client(pool: Http1Pool, server: Server) -> None:
        await pool.post("/", b"{}", 5)
        await asyncio.sleep(0.3)
        await pool.post("/", b"{}", 5)

    assert run(ok, client, idle_s=0.2).connections == 2
    assert run(ok, client, idle_s=5).connections == 1


def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def close_after(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> None:
        await write_and_close(writer, OK)

    async def client(pool: Http1Pool, server: Server) -> None:
        for _ in range(3):
            assert await pool.post("/", b"{}", 5) == (200, ANSWER)
            await asyncio.sleep(0.05)

    assert run(close_after, client).connections == 3


def test_connection_close_and_chunked_answers() -> None:
    async def chunked_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> None:
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
        )

    async def client(pool: Http1Pool, server: Server) -> None:
        assert await pool.post("/", b"{}", 5) == (400, b"abcdefg")
        assert await pool.post("/", b"{}", 5) == (400, b"abcdefg")

    assert run(chunked_then_close, client).connections == 2  # "close" is honoured


def test_nobody_listening_is_not_sent(tmp_path: Path) -> None:
    async def call(pool: Http1Pool) -> None:
        try:
            await pool.post("/", b"{}", 5)
        finally:
            await pool.aclose()

    for pool in (
        Http1Pool("localhost", host="127.0.0.1", port=free_port()),
        Http1Pool("localhost", unix_socket=str(tmp_path / "none.sock")),
    ):
        with pytest.raises(Http1Error) as e:
            asyncio.run(call(pool))
        assert not e.value.sent and "cannot connect" in str(e.value)


def test_a_slow_answer_times_out_and_the_connection_is_closed() -> None:
    """Closed, so that vLLM sees its client gone and aborts the request."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
        await client_leaves(reader)

    async def client(pool: Http1Pool, server: Server) -> None:
        with pytest.raises(TimeoutError):
            await pool.post("/", b"{}", 0.2)
        await asyncio.sleep(0.1)
        assert server.closed_by_client == 1 and server.open_now == 0

    run(slow, client)


def test_a_caller_that_leaves_closes_the_connection() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
        await client_leaves(reader)

    async def client(pool: Http1Pool, server: Server) -> None:
        call = asyncio.ensure_future(pool.post("/", b"{}", 30))
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.1)
        assert server.closed_by_client == 1 and server.open_now == 0

    run(slow, client)


@pytest.mark.parametrize(
    "answer",
    [b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"cut', b"SMTP ready\r\n\r\n"],
    ids=["cut mid-answer", "not HTTP"],
)
def test_a_broken_answer_is_an_error_that_was_sent(answer: bytes) -> None:
    """The first request gets `answer` and a closed connection, the next a good one."""
    answered: list[bytes] = []

    async def first_broken(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> None:
        answered.append(body)
        if len(answered) == 1:
            await write_and_close(writer, answer)
        else:
            writer.write(OK)

    async def client(pool: Http1Pool, server: Server) -> None:
        with pytest.raises(Http1Error) as e:
            await pool.post("/", b"{}", 5)
        assert e.value.sent  # it may be running there: not safe to send elsewhere
        assert await pool.post("/", b"{}", 5) == (200, ANSWER)

    server = run(first_broken, client)
    assert server.connections == 2  # the broken connection was not reused


def test_connections_are_bounded() -> None:
    async def slowish(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> None:
        await asyncio.sleep(0.05)
        writer.write(OK)

    async def client(pool: Http1Pool, server: Server) -> None:
        answers = await asyncio.gather(*(pool.post("/", b"{}", 5) for _ in range(10)))
        assert answers == [(200, ANSWER)] * 10

    server = run(slowish, client, limit=3)
    assert server.most_open == 3 and server.connections == 3
