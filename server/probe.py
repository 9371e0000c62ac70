"""Backend health: is it up, which model does it serve, and can it really generate?

`/health` of vLLM can answer while generation is broken (vllm#24207), so readiness comes
from a short real generation, repeated every `probe_interval_s`. A backend whose probe
errors, times out or produces degenerate text is marked degraded.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from server.errors import GatewayError
from server.metrics import Metrics
from server.vllm_http import VllmBackend

log = logging.getLogger("loraport.gateway")

# The whole text is one piece of up to 8 characters, said at least four times.
_LOOP = re.compile(r"(.{1,8}?)\1{3,}", re.DOTALL)
PROBE_MESSAGE = "Hello, I need help with my order."


def degenerate(text: str) -> str | None:
    """Why a probe's output is unusable, or None when it looks like real text."""
    stripped = text.strip()
    if not stripped:
        return "empty output"
    if _LOOP.fullmatch(stripped):
        return "one short piece repeated"
    words = stripped.split()
    if len(words) >= 4 and len(set(words)) == 1:
        return "one word repeated"
    return None


def probe_body(model_id: str) -> dict[str, Any]:
    return {
        "model": model_id,
        "messages": [{"role": "user", "content": PROBE_MESSAGE}],
        "max_tokens": 16,
        "temperature": 0,
    }


async def probe_once(backend: VllmBackend, timeout_s: float) -> str | None:
    """One generation; the problem found, or None when the backend is fine."""
    state = backend.state
    try:
        if state.model_id is None:
            state.model_id = await backend.discover_model()
        data = await asyncio.wait_for(
            backend.generate("/v1/chat/completions", probe_body(state.model_id)), timeout_s
        )
    except TimeoutError:
        return f"generation probe timed out after {timeout_s:.0f}s"
    except GatewayError as e:
        return f"generation probe failed: {e.message}"
    choices = data.get("choices") or [{}]
    text = str((choices[0].get("message") or {}).get("content") or "")
    return degenerate(text)


async def check(backend: VllmBackend, timeout_s: float, metrics: Metrics) -> None:
    """Refresh one backend's state: up, model, degraded."""
    state = backend.state
    up = await backend.health()
    if state.up and not up:
        state.generation += 1  # whatever it held is gone once it comes back
        state.model_id = None
    state.up = up
    if up:
        problem = await probe_once(backend, timeout_s)
        state.degraded = problem is not None
        state.detail = problem or "ready"
    else:
        state.detail = "not answering /health"
    metrics.backend_up.labels(backend.label).set(1 if state.up else 0)
    metrics.backend_degraded.labels(backend.label).set(1 if state.degraded else 0)


async def watch(
    backends: list[VllmBackend], interval_s: float, timeout_s: float, metrics: Metrics
) -> None:
    """Probe forever: every second while any backend is not ready, else every interval."""
    while True:
        for backend, result in zip(
            backends,
            await asyncio.gather(
                *(check(b, timeout_s, metrics) for b in backends), return_exceptions=True
            ),
            strict=True,
        ):
            if isinstance(result, Exception):  # never let one bad answer stop the probing
                log.exception("probe of backend %s failed", backend.label, exc_info=result)
                backend.state.degraded, backend.state.detail = True, f"probe failed: {result}"
        all_ready = all(b.state.ready for b in backends)
        await asyncio.sleep(interval_s if all_ready else 1.0)
