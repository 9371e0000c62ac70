"""How the client side of vLLM maps what a misbehaving server does, against a small
aiohttp server that misbehaves on purpose (real vLLM is tested in the other modules)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from server.errors import BackendError, BackendUnavailableError, GatewayError
from server.supervisor import free_port
from server.vllm_http import NotSentError, VllmBackend

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _stream_lines(handler: Handler) -> list[str]:
    runner, url = await _serve(handler)
    backend = VllmBackend(url, "t", timeout_s=5)
    try:
        async with backend.stream("/v1/chat/completions", {"stream": True}) as lines:
            return [line async for line in lines]
    finally:
        await backend.aclose()
        await runner.cleanup()


async def _events(request: web.Request, parts: list[bytes]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for part in parts:
        await resp.write(part)
    return resp


def test_stream_lines_are_read_whole() -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return await _events(request, [b'data: {"a"', b": 1}\n\n", b"data: [DONE]\n\n"])

    assert asyncio.run(_stream_lines(ok)) == ['data: {"a": 1}', "", "data: [DONE]", ""]


def test_a_line_over_the_limit_is_a_backend_error() -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        return await _events(request, [b"data: " + b"x" * (3 << 20) + b"\n\n"])

    with pytest.raises(BackendError) as e:
        asyncio.run(_stream_lines(huge))
    assert e.value.code == "backend_failed" and e.value.status == 502


def test_a_stream_cut_mid_way_is_a_backend_error() -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = await _events(request, [b'data: {"a": 1}\n\n'])
        assert request.transport is not None
        request.transport.close()  # the server dies mid-answer
        return resp

    with pytest.raises(BackendError) as e:
        asyncio.run(_stream_lines(cut))
    assert e.value.code == "backend_failed"


def test_an_unreachable_backend_is_503() -> None:
    async def call() -> None:
        backend = VllmBackend(f"http://127.0.0.1:{free_port()}", "t", timeout_s=5)
        try:
            await backend.generate("/v1/chat/completions", {})
        finally:
            await backend.aclose()

    with pytest.raises(BackendUnavailableError) as e:
        asyncio.run(call())
    assert isinstance(e.value, NotSentError)  # never sent: another backend may serve it


def test_a_slow_answer_times_out() -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)
        return web.json_response({})

    async def call() -> None:
        runner, url = await _serve(slow)
        backend = VllmBackend(url, "t", timeout_s=0.2)
        try:
            await backend.generate("/v1/chat/completions", {})
        finally:
            await backend.aclose()
            await runner.cleanup()

    with pytest.raises(GatewayError) as e:
        asyncio.run(call())
    assert e.value.code == "timeout" and e.value.status == 502
