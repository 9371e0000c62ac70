"""How the client side of vLLM maps what a misbehaving server does, against a small
aiohttp server that misbehaves on purpose (real vLLM is tested in the other modules)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

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


def test_every_call_goes_over_a_unix_socket(tmp_path: Path) -> None:
    """The embedded default's transport: generate, stream, /health, /metrics, /v1/models
    and loading an adapter all reach the server over its socket."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path}")
        if request.path == "/v1/models":
            return web.json_response({"data": [{"id": "base", "parent": None}]})
        if request.path == "/metrics":
            return web.Response(text="vllm:num_requests_running 3.0\n")
        if request.path == "/v1/completions":
            return await _events(request, [b"data: one\n\n", b"data: [DONE]\n\n"])
        return web.json_response({"ok": True})

    async def call() -> None:
        app = web.Application()
        for method, path in [("GET", "/health"), ("GET", "/metrics"), ("GET", "/v1/models"),
                             ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
                             ("POST", "/v1/load_lora_adapter")]:  # fmt: skip
            app.router.add_route(method, path, record)
        runner = web.AppRunner(app)
        await runner.setup()
        path = str(tmp_path / "vllm.sock")
        await web.UnixSite(runner, path).start()
        backend = VllmBackend("http://localhost", "local", timeout_s=5, unix_socket=path)
        try:
            assert await backend.health()
            stats = await backend.engine_stats()
            assert stats is not None and stats.running == 3.0
            assert await backend.discover_model() == ("base", None)
            assert await backend.generate("/v1/chat/completions", {}) == {"ok": True}
            async with backend.stream("/v1/completions", {"stream": True}) as lines:
                assert "data: one" in [line async for line in lines]
            await backend.load_lora("a", "/adapters/a")
        finally:
            await backend.aclose()
            await runner.cleanup()

    asyncio.run(call())
    assert seen == ["GET /health", "GET /metrics", "GET /v1/models", "POST /v1/chat/completions",
                    "POST /v1/completions", "POST /v1/load_lora_adapter"]  # fmt: skip


@pytest.mark.parametrize("left", ["nothing", "a dead socket"])
def test_a_socket_nobody_listens_on_is_not_sent(tmp_path: Path, left: str) -> None:
    """No file (vLLM not started yet) or the file of a killed server (ECONNREFUSED): the
    request never reached vLLM, as for a refused TCP connection."""
    path = tmp_path / "vllm.sock"
    if left == "a dead socket":
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))  # bound, never listening: what a killed server leaves
        assert path.is_socket()

    async def call() -> None:
        backend = VllmBackend("http://localhost", "local", timeout_s=5, unix_socket=str(path))
        try:
            assert not await backend.health()
            await backend.generate("/v1/chat/completions", {})
        finally:
            await backend.aclose()

    with pytest.raises(NotSentError, match="local unreachable"):
        asyncio.run(call())
