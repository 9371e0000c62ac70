"""A stand-in for vLLM's OpenAI server that answers at once with a canned completion.

For measurement only (`bench/gateway_overhead.py --instant`): with no model to run, what
the gateway adds is its own per-request cost, free of the CPU contention of a real vLLM on
the same cores. Tests of serving use it in one place: as the second backend that
tests/server/test_scaleout.py kills -9 (its answers' id, `chatcmpl-instant`, tells which
backend answered).

    .venv/bin/python bench/instant_backend.py PORT [HOST [DELAY_S]]
    .venv/bin/python bench/instant_backend.py unix:PATH     # on a Unix socket (bench/uds_hop.py)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

LORAS: set[str] = set()
DELAY_S = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
RUNNING = 0
DONE = 0
TRACE: dict[str, tuple[float, float]] = {}


async def health(_: Request) -> Response:
    return PlainTextResponse("")


async def models(_: Request) -> Response:
    data = [{"id": "tiny-llama", "object": "model", "parent": None}]
    data += [{"id": n, "object": "model", "parent": "tiny-llama"} for n in sorted(LORAS)]
    return JSONResponse({"object": "list", "data": data})


async def load(request: Request) -> Response:
    LORAS.add((await request.json())["lora_name"])
    return PlainTextResponse("ok")


async def unload(request: Request) -> Response:
    LORAS.discard((await request.json())["lora_name"])
    return PlainTextResponse("ok")


async def metrics(_: Request) -> Response:
    text = f"vllm:num_requests_running {RUNNING}\nvllm:num_requests_waiting 0\n"
    text += f"vllm:request_success_total {DONE}\n"
    return PlainTextResponse(text)


async def chat(request: Request) -> Response:
    global RUNNING, DONE
    entered = time.perf_counter()
    body = await request.json()
    if body["model"] != "tiny-llama" and body["model"] not in LORAS:
        error = {"message": f"The model `{body['model']}` does not exist.", "code": 404}
        return JSONResponse({"error": error}, status_code=404)
    RUNNING += 1
    try:
        await asyncio.sleep(DELAY_S)
    finally:
        RUNNING -= 1
    DONE += 1
    answer = {
        "id": "chatcmpl-instant", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "length", "message": {
            "role": "assistant", "content": "Thank you for contacting us about your order."}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 16, "total_tokens": 36},
    }  # fmt: skip
    if str(body.get("user", "")).startswith("trace-"):  # bench/gateway_trace.py
        TRACE[body["user"]] = (entered, time.perf_counter())
    return Response(
        json.dumps(answer, separators=(",", ":")), media_type="application/json"
    )  # as vLLM writes it


async def trace(_: Request) -> Response:
    """When each traced request (`"user": "trace-..."`) entered the handler and left it,
    on the host's monotonic clock (`time.perf_counter`, shared by every process)."""
    return JSONResponse(TRACE)


app = Starlette(routes=[
    Route("/health", health), Route("/v1/models", models), Route("/metrics", metrics),
    Route("/v1/load_lora_adapter", load, methods=["POST"]),
    Route("/v1/unload_lora_adapter", unload, methods=["POST"]),
    Route("/v1/chat/completions", chat, methods=["POST"]), Route("/trace", trace),
])  # fmt: skip

if __name__ == "__main__":
    if sys.argv[1].startswith("unix:"):
        uvicorn.run(app, uds=sys.argv[1][len("unix:") :], log_level="warning")
    else:
        host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
        uvicorn.run(app, host=host, port=int(sys.argv[1]), log_level="warning")
