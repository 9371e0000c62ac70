"""A streamed answer: vLLM's server-sent events relayed to the client as they come, each
renamed to the adapter's ref, with usage kept for the metrics, and the whole text judged
once the stream has ended."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from server.call import Answers, Call
from server.errors import BackendError, to_gateway_error
from server.protocol import delta_of


class ClosingStreamingResponse(StreamingResponse):
    """A stream that stops the moment the client goes away, and always cleans up.

    Starlette, under ASGI 2.4 servers, only notices a disconnect on the next write and
    then leaves the generator suspended; upstream vLLM would go on generating. Here the
    disconnect listener always runs (it cancels the stream at once), the generator is
    always closed (which closes the upstream request, so vLLM aborts it), and `on_close`
    runs even if the generator never started.
    """

    def __init__(
        self,
        content: AsyncIterator[str],
        on_close: Callable[[], Awaitable[None]],
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._content = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        legacy = {**scope, "asgi": {**scope.get("asgi", {}), "spec_version": "2.3"}}
        try:
            await super().__call__(legacy, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._content.aclose()  # type: ignore[attr-defined]
                await self._on_close()


async def relay(
    upstream: AsyncIterator[str],
    call: Call,
    wants_usage: bool,
    judge: Callable[[Answers], None],
    finish: Callable[[], Awaitable[None]],
) -> AsyncIterator[str]:
    """The events the client gets. `judge` sees every choice's whole text once the
    stream has ended (it raises to refuse a structured result); a failure then becomes a
    last error event, as OpenAI's streams end. `finish` runs however the stream ends."""
    outcome, endpoint = call.outcome, call.endpoint
    texts: dict[int, str] = {}
    finish_reasons: dict[int, str | None] = {}
    try:
        async for line in upstream:
            if not line.startswith("data: "):
                continue
            payload = line[6:]
            if payload == "[DONE]":
                break
            try:
                chunk = json.loads(payload)
            except ValueError as e:
                raise BackendError(f"vLLM sent a stream event that is not JSON: {e}") from None
            if "error" in chunk:
                message = str((chunk["error"] or {}).get("message", "stream failed"))
                raise BackendError(f"vLLM failed mid-stream: {message}")
            choices = chunk.get("choices", [])
            if outcome.ttft_s is None and any(delta_of(endpoint, c) for c in choices):
                outcome.ttft_s = time.perf_counter() - call.started
            for c in choices:
                i = int(c.get("index", 0))
                texts[i] = texts.get(i, "") + delta_of(endpoint, c)
                finish_reasons[i] = c.get("finish_reason") or finish_reasons.get(i)
            usage = chunk.get("usage")
            if usage:
                outcome.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                outcome.completion_tokens = int(usage.get("completion_tokens") or 0)
            if not wants_usage:
                chunk.pop("usage", None)
                if not chunk.get("choices"):
                    continue
            chunk["model"] = call.target.ref
            yield f"data: {json.dumps(chunk)}\n\n"
        judge({i: (t, finish_reasons.get(i)) for i, t in sorted(texts.items())})
        yield "data: [DONE]\n\n"
    except (GeneratorExit, asyncio.CancelledError):
        outcome.status = 499  # the client went away: closing upstream aborts vLLM's work
        raise
    except Exception as e:  # a refused structured result, or the backend failed
        error = to_gateway_error(e)
        outcome.error, outcome.status = error, error.status
        yield f"data: {json.dumps(error.body())}\n\n"
    finally:
        await finish()
