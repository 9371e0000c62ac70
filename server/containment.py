"""Containment: one tenant's adapter must not keep hurting everyone's answers.

The registry refuses weights that cannot be served safely, but an adapter can still
corrupt the engine (one pushed before those bounds, or within bounds an operator
relaxed) or answer degenerately. An adapter filled with 3e38 was seen to answer "" and
leave vLLM's base model answering "" for everyone until the engine was replaced; and
restarting the engine alone is not enough: the next request would do it again.

So every answer the gateway returns is looked at (`answer_problem`, pure). A degenerate
one starts a check of its backend at once, without waiting for the next probe:

1. the base model is asked the probe's question (:func:`server.probe.probe_once`);
2. if its answer is degenerate or changed, the engine is corrupted: the adapter whose
   degenerate answer started the check is quarantined and the engine is replaced (an
   embedded one is restarted; a remote one stays out of rotation until it answers as
   before, as the probe does);
3. otherwise the adapter itself is asked the same question, alone; a degenerate answer
   there too quarantines it (a one-off empty answer to a user's prompt does not).

The verdict is :func:`verdict`, a pure function. A quarantine is written to the registry,
so every gateway refuses the version (`adapter_quarantined`) until a person runs
`registry quarantine rm`; this gateway also remembers it, in case the registry cannot
be written. One check runs per backend at a time: while the engine is corrupted every
answer is degenerate, and only the adapter whose answer started the check is blamed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from server import probe
from server.adapters import AdapterSlots
from server.metrics import Metrics
from server.resolver import Target

log = logging.getLogger("loraport.gateway")

#: An answer shorter than this (in tokens) that ran out of budget is not judged: a client
#: asking for one token gets one, and that is not a sign of anything.
MIN_JUDGED_TOKENS = 4


def answer_problem(text: str, finish_reason: str | None, completion_tokens: int) -> str | None:
    """Why an answer returned to a client is degenerate, or None (pure)."""
    if finish_reason == "stop" and not text.strip():
        return "empty answer"
    if finish_reason != "stop" and completion_tokens < MIN_JUDGED_TOKENS:
        return None
    return probe.degenerate(text)


def verdict(base: probe.Verdict, adapter_answer: str | None, known_good: bool) -> str | None:
    """The quarantine reason for the adapter under check, or None to let it be (pure).

    ``base``: the probe of the base model right after the adapter's degenerate answer;
    ``adapter_answer``: the adapter's own answer to the probe (None: not asked);
    ``known_good``: the base model answered this backend's probe well before (a base
    that never did says nothing about an adapter)."""
    if probe.corrupted(base, known_good):
        return f"the engine was corrupted right after it ran: {base.detail}"
    if base.degraded:  # a timeout or an error says nothing about the adapter
        return None
    if adapter_answer is None:
        return None
    problem = probe.degenerate(adapter_answer)
    if problem is None:
        return None
    return f"it answers degenerately ({problem}) while the base model answers normally"


class Quarantiner(Protocol):
    async def quarantine(self, target: Target, reason: str) -> None: ...


class Containment:
    """Checks a backend after a degenerate answer; quarantines and replaces as judged."""

    def __init__(
        self,
        quarantiner: Quarantiner,
        metrics: Metrics,
        timeout_s: float,
        restart: Mapping[str, probe.Restart],
    ) -> None:
        self._quarantiner = quarantiner
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._restart = restart
        self._checking: dict[str, asyncio.Task[None]] = {}

    def suspect(self, slots: AdapterSlots, target: Target) -> None:
        """`target` just answered degenerately on `slots`' backend: check it (once)."""
        label = slots.backend.label
        if label in self._checking:
            return
        task = asyncio.create_task(self._check(slots, target))
        self._checking[label] = task
        task.add_done_callback(lambda _: self._checking.pop(label, None))

    async def idle(self) -> None:
        """Wait for the checks under way (tests, shutdown)."""
        await asyncio.gather(*self._checking.values(), return_exceptions=True)

    async def _check(self, slots: AdapterSlots, target: Target) -> None:
        backend = slots.backend
        try:
            run = await probe.probe_once(backend, self._timeout_s)
            for _ in range(probe.CHANGED_RETRIES):
                if run.verdict.reason != "changed":
                    break
                run = await probe.probe_once(backend, self._timeout_s)
            answer = None
            if not run.verdict.degraded and target.adapter is not None:
                answer = await self._ask(slots, target)
            known_good = backend.state.base_answer is not None
            reason = verdict(run.verdict, answer, known_good)
            corrupted = probe.corrupted(run.verdict, known_good)
            if reason is None and not corrupted:
                return
            if reason is not None and target.adapter is not None:
                log.error("quarantining %s: %s", target.ref, reason)
                await self._quarantiner.quarantine(target, reason)
                self._metrics.quarantines.labels(*target.series.values()[:2]).inc()
                if not corrupted and target.lora_name is not None:
                    await slots.evict(target.lora_name)
            if corrupted:
                self._metrics.probe_failures.labels(backend.label, run.verdict.reason).inc()
                backend.state.judged(True, run.verdict.detail)
                restart = self._restart.get(backend.label)
                if restart is not None:
                    log.error("backend %s: %s; restarting it", backend.label, run.verdict.detail)
                    restart(run.verdict.detail)
        except Exception:  # a failed check must never take the gateway down
            log.exception("containment check of backend %s failed", backend.label)

    async def _ask(self, slots: AdapterSlots, target: Target) -> str | None:
        """The adapter's own greedy answer to the probe's question (None: no answer)."""
        try:
            async with slots.use(target) as model_name:
                data = await asyncio.wait_for(
                    slots.backend.generate("/v1/chat/completions", probe.probe_body(model_name)),
                    self._timeout_s,
                )
        except (TimeoutError, Exception):
            log.warning("containment: %s did not answer the probe", target.ref)
            return None
        choices = data.get("choices") or [{}]
        return str((choices[0].get("message") or {}).get("content") or "")
