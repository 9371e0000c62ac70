"""Backends shared with other gateways: what each vLLM holds and runs, read from vLLM.

Several gateways in front of the same vLLM servers each see only their own loads and
requests. Every `backends_sync_s` (2 s by default) each ready backend is asked two cheap
questions, apart from the probe (whose real generation runs only every 30 s):

- `/v1/models`: the adapters it holds (entries with a `parent`), whoever loaded them. An
  adapter another gateway loaded is then held there for routing, and counts against this
  gateway's LRU bound (`AdapterSlots.observe`);
- `/metrics`: requests running and waiting. What is not this gateway's is other gateways'
  load (`others_in_flight`), added to the backend's in-flight count for routing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from server.adapters import AdapterSlots
from server.errors import GatewayError
from server.vllm_http import EngineStats

log = logging.getLogger("loraport.gateway")


def others_in_flight(engine: EngineStats | None, own_at_sample: int) -> int:
    """Requests of other gateways on a backend (pure): vLLM's running and waiting at the
    sample, less this gateway's own in flight then (never below 0: a request of ours may
    be counted here before vLLM has it, or after it has ended there). None: no sample."""
    if engine is None:
        return 0
    return max(0, round(engine.running + engine.waiting) - own_at_sample)


async def sync_once(slots: AdapterSlots, timeout_s: float) -> None:
    """Read one backend's adapters and load into `slots` and its state."""
    backend = slots.backend
    state = backend.state
    if not state.ready:
        return
    generation = state.generation
    try:
        listed = await asyncio.wait_for(backend.lora_names(), timeout_s)
    except (GatewayError, TimeoutError):
        return  # the probe and the request path judge an unreachable backend
    slots.observe(listed, generation)
    stats = await backend.engine_stats(timeout_s=timeout_s)
    if state.generation == generation:
        state.sampled(others_in_flight(stats, state.in_flight))


async def sync_forever(slots: Sequence[AdapterSlots], interval_s: float) -> None:
    """Sync every backend in `slots` (a list that may change between rounds) forever."""
    while True:
        current = list(slots)
        results = await asyncio.gather(
            *(sync_once(s, max(1.0, interval_s)) for s in current), return_exceptions=True
        )
        for s, result in zip(current, results, strict=True):
            if isinstance(result, Exception):
                log.warning("reading backend %s's adapters failed: %s", s.backend.label, result)
        await asyncio.sleep(interval_s)
