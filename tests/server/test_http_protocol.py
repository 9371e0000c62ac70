"""server/http_protocol.py: a response's head and body leave in one write; nothing is held
past the loop's step, reordered or lost; a watched connection tells when its client
leaves. The transport's rules against a recording transport; the protocol under a real
uvicorn (streams, HEAD, keep-alive, close, a client that leaves)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from server.http_protocol import DISCONNECT, HeadHoldingTransport, OneWriteProtocol
from server.supervisor import free_port

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording:
    """What a transport was asked to do."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """A test that runs in a fresh event loop (the project's tests use no async plugin)."""
    return functools.wraps(test)(lambda: asyncio.run(test()))


async def holding() -> tuple[HeadHoldingTransport, Recording]:
    raw = Recording()
    return HeadHoldingTransport(raw, asyncio.get_running_loop()), raw  # type: ignore[arg-type]


@in_loop
async def test_a_head_and_its_body_in_one_step_are_one_write() -> None:
    t, raw = await holding()
    t.write(HEAD)
    assert raw.writes == []
    t.write(b"{}")
    assert raw.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)  # the end-of-step flush finds nothing held
    assert raw.writes == [HEAD + b"{}"]


@in_loop
async def test_a_head_alone_leaves_at_the_end_of_the_step() -> None:
    """A stream's head is not held until its first chunk."""
    t, raw = await holding()
    t.write(HEAD)
    await asyncio.sleep(0)
    assert raw.writes == [HEAD]
    t.write(b"data: 1\n\n")  # chunks pass straight through
    assert raw.writes == [HEAD, b"data: 1\n\n"]


@in_loop
async def test_close_writes_what_is_held_first() -> None:
    t, raw = await holding()
    t.write(HEAD)
    t.close()
    assert raw.writes == [HEAD] and raw.closed
    await asyncio.sleep(0)
    assert raw.writes == [HEAD]  # not twice


@in_loop
async def test_nothing_is_written_to_a_connection_already_closing() -> None:
    t, raw = await holding()
    t.write(HEAD)
    raw.closed = True  # the client went away meanwhile
    await asyncio.sleep(0)
    assert raw.writes == []


@in_loop
async def test_other_calls_reach_the_transport() -> None:
    t, _ = await holding()
    assert t.get_extra_info("peername") == "info:peername"
    assert t.is_closing() is False


# -- under a real uvicorn ---------------------------------------------------------------


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":  # the head, then a chunk only once the client saw it
        LOOP.append(asyncio.get_running_loop())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await GO.wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


GO = asyncio.Event()
LOOP: list[asyncio.AbstractEventLoop] = []


@contextmanager
def served(asgi: Any = app) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(asgi, port=port, log_level="warning", http=OneWriteProtocol)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with served() as u:
        yield u


def test_answers_on_one_kept_alive_connection(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        for _ in range(3):
            r = client.post("/x", content=b"{}")
            assert r.status_code == 200 and r.json() == {"ok": True}


def test_head_and_connection_close(url: str) -> None:
    assert httpx.head(f"{url}/x").headers["content-length"] == "11"
    r = httpx.get(f"{url}/x", headers={"connection": "close"})
    assert r.json() == {"ok": True}


def test_a_streams_head_does_not_wait_for_its_first_chunk(url: str) -> None:
    """Were the head held until the next write, the client would wait here until its
    timeout: the server sends its chunk only once the client has the head."""
    with httpx.Client(base_url=url, timeout=5) as client, client.stream("GET", "/stream") as r:
        assert r.status_code == 200  # the head arrived before any chunk
        LOOP[0].call_soon_threadsafe(GO.set)
        assert r.read() == b"late"


# -- the client leaving, told by the connection -----------------------------------------

WATCHED: dict[str, list[object]] = {}


async def watching(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body, then watches its connection (`case` in the query: `leave` waits for
    the client to go; `unwatch` stops watching before it goes)."""
    case = scope["query_string"].decode()
    seen = WATCHED.setdefault(case, [])
    while (await receive()).get("more_body"):
        pass
    connection = scope["extensions"][DISCONNECT]
    lost = asyncio.Event()
    seen.append(connection.watch(lambda: seen.append("lost") or lost.set()))
    if case == "unwatch":
        connection.unwatch()
    seen.append("watching")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(lost.wait(), 3)
    seen.append(connection.watch(lambda: None))  # too late: it has gone
    seen.append("done")


def _post_and_leave(url: str, case: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(f"POST /?{case} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode())
        deadline = time.monotonic() + 5
        while "watching" not in WATCHED.get(case, []):
            assert time.monotonic() < deadline, WATCHED
            time.sleep(0.01)
    deadline = time.monotonic() + 10
    while "done" not in WATCHED[case]:
        assert time.monotonic() < deadline, WATCHED
        time.sleep(0.01)


def test_a_watched_connection_tells_when_its_client_leaves() -> None:
    with served(watching) as u:
        _post_and_leave(u, "leave")
        _post_and_leave(u, "unwatch")
    assert WATCHED["leave"] == [True, "watching", "lost", False, "done"]
    assert WATCHED["unwatch"] == [True, "watching", False, "done"]  # no call once unwatched
