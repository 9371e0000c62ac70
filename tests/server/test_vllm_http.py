"""How the client side of vLLM maps what a misbehaving server does, against a small
aiohttp server that misbehaves on purpose (real vLLM is tested in the other modules)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from server.errors import AdapterLoadError, BackendError, BackendUnavailableError, GatewayError
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


def _refusal(message: str) -> web.Response:
    body = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
    return web.json_response(body, status=400)


def test_an_adapter_vllm_will_not_load_is_its_own_error() -> None:
    """By name through a resolver plugin (vLLM 0.32's words), and by path: both 502
    adapter_load_failed, not a 400 that blames the client."""

    async def by_name(request: web.Request) -> web.StreamResponse:
        return _refusal("LoRA adapter 'wide@1' was found but could not be loaded.")

    async def call_by_name() -> None:
        runner, url = await _serve(by_name)
        backend = VllmBackend(url, "t", timeout_s=5)
        try:
            await backend.generate("/v1/chat/completions", {"model": "wide@1"})
        finally:
            await backend.aclose()
            await runner.cleanup()

    async def call_by_path() -> None:
        app = web.Application()

        async def load(request: web.Request) -> web.Response:
            return _refusal("LoRA rank 16 is greater than max_lora_rank 8.")

        async def models(request: web.Request) -> web.Response:
            return web.json_response({"data": [{"id": "base", "parent": None}]})

        app.router.add_post("/v1/load_lora_adapter", load)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        backend = VllmBackend(f"http://127.0.0.1:{port}", "t", timeout_s=5)
        try:
            await backend.load_lora("wide@1+abc", "/cache/wide")
        finally:
            await backend.aclose()
            await runner.cleanup()

    for call, said in ((call_by_name, "was found but"), (call_by_path, "max_lora_rank 8")):
        with pytest.raises(AdapterLoadError) as e:
            asyncio.run(call())
        assert (e.value.status, e.value.code) == (502, "adapter_load_failed")
        assert said in e.value.message
