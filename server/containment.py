"""Containment: one tenant's adapter must not keep hurting everyone's answers.

The registry refuses weights that cannot be served safely, but an adapter can still
corrupt the engine (one pushed before those bounds, or within bounds an operator
relaxed) or answer degenerately. An adapter filled with 3e38 was seen to answer "" and
leave vLLM's base model answering "" for everyone until the engine was replaced; and
restarting the engine alone is not enough: the next request would do it again.

Every answer the gateway returns is looked at (`response_problem`, pure), but for those
whose output the client shaped itself (`client_shaped`: stop strings, token bans or
biases, penalties that reward repeats, `ignore_eos`). A degenerate
one starts a check of its backend at once (one at a time per backend): the base model is
asked the probe's question (:func:`server.probe.probe_once`), then the suspect adapter.
Where both answer well under load the check ends there; anything else is asked again on
a drained backend (`_drained`), where the probes run alone, and only those answers
decide what follows.

- **The engine is corrupted** (the base answer changed, or is degenerate after a good
  one; seen by a check, or by the readiness probe alone on the engine: `corrupted`).
  Whoever answered "" first is not necessarily to blame: every answer on a corrupted
  engine is "", and a short request of a good adapter can finish before the long one
  that did it. The suspects are every adapter that ran on the backend since the
  start of its last clean base-model probe (`candidates`, pure): a user's answer cannot
  clear the engine, since one that began before the corruption keeps its good start.
  Each suspect is held (503 `adapter_under_check`), the engine is replaced (an embedded
  one restarted; a remote one waits until it answers as before), and then each suspect
  runs alone, followed by the base probe. One that corrupts the engine again (replaced
  once more), or answers degenerately, is quarantined; the rest are released. Every
  hold ends with the replay, also one given up (a backend not back within
  `READY_WAIT_S`, a failed check).
- **The engine is fine.** Each adapter that answered degenerately is asked the probe's
  question alone; a degenerate answer there too quarantines it (a one-off empty answer
  to a user's prompt does not). A target found fine (an adapter, or the base model on
  a clean check of its backend) is not checked again for `RECHECK_AFTER_S`, so a client
  cannot make the gateway drain and probe on every answer.

The decision for one adapter is :func:`verdict` (pure). A quarantine is written to the
registry, so every gateway refuses the version (`adapter_quarantined`) until a person
runs `registry quarantine rm`; where the registry cannot be written, this gateway still
refuses it itself (server/resolver.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from server import probe
from server.adapters import AdapterSlots
from server.metrics import Metrics
from server.resolver import Target

log = logging.getLogger("loraport.gateway")

#: After a check that found nothing, the same target is not checked again for this long.
RECHECK_AFTER_S = 30.0
#: How long a corrupted backend may take to come back before its suspects are replayed.
READY_WAIT_S = 600.0
#: How often a suspect is run alone before traffic from elsewhere (another gateway on a
#: shared backend) counts as leaving it unjudged.
ALONE_TRIES = 3
#: How long a check waits for a drained backend's requests in flight to finish.
DRAIN_WAIT_S = 30.0
#: How long a request waits for a drained backend before it is a 503 (a check takes
#: about a second once the requests in flight are done).
QUEUE_WHILE_DRAINED_S = 60.0
#: An answer shorter than this (in tokens) that ran out of budget is not judged: a client
#: asking for one token gets one, and that is not a sign of anything.
MIN_JUDGED_TOKENS = 4
#: The key under which a clean check of a backend is remembered for the base model's own
#: degenerate answers (adapters' keys are their refs, which never are "").
BASE = ""


def answer_problem(text: str, finish_reason: str | None, completion_tokens: int) -> str | None:
    """Why one answer returned to a client is degenerate, or None (pure)."""
    if finish_reason == "stop" and not text.strip():
        return "empty answer"
    if finish_reason != "stop" and completion_tokens < MIN_JUDGED_TOKENS:
        return None
    return probe.degenerate(text)


#: Request fields by which a client shapes the output itself (where set to anything but
#: their neutral value): what it made empty or repetitive says nothing about the adapter.
SHAPING_FIELDS = (
    "stop", "stop_token_ids", "logit_bias", "bad_words", "allowed_token_ids", "min_tokens",
)  # fmt: skip


_NEUTRAL: tuple[Any, ...] = (None, False, 0, "", [], {})
_REWARDS_REPEATS = (("repetition_penalty", 1.0), ("presence_penalty", 0.0),
                    ("frequency_penalty", 0.0))  # fmt: skip


def client_shaped(forward: Mapping[str, Any]) -> bool:
    """The client shaped this request's output itself (pure): forced past the model's
    end (`ignore_eos`), stopped or banned or biased tokens of its choosing, or rewarded
    repeats (a repetition penalty under 1, a negative presence or frequency penalty)."""
    if forward.get("ignore_eos") is True:
        return True
    for k in SHAPING_FIELDS:  # a loop, not any(): it runs on every answer
        if forward.get(k) not in _NEUTRAL:
            return True
    for key, neutral in _REWARDS_REPEATS:
        value = forward.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < neutral:
            return True
    return False


def response_problem(
    answers: Sequence[tuple[str, str | None]], completion_tokens: int, forced: bool
) -> str | None:
    """Why a response (its choices' text and finish reason) is degenerate, or None (pure).
    Output the client shaped itself (``forced``: :func:`client_shaped`, e.g. `ignore_eos`,
    where repeating itself is what a small model does) is not judged."""
    if forced or not answers:
        return None
    tokens = completion_tokens // len(answers)
    return next((p for t, f in answers if (p := answer_problem(t, f, tokens))), None)


def verdict(base: probe.Verdict, adapter_answer: str | None, known_good: bool) -> str | None:
    """The quarantine reason for an adapter that just ran alone, or None (pure).

    ``base``: the probe of the base model right after it; ``adapter_answer``: its own
    answer to the probe (None: not asked); ``known_good``: the base model answered this
    backend's probe well before (a base that never did says nothing about an adapter)."""
    if probe.corrupted(base, known_good):
        return f"the engine was corrupted right after it ran alone: {base.detail}"
    if base.degraded:  # a timeout or an error says nothing about the adapter
        return None
    if adapter_answer is None:
        return None
    problem = probe.degenerate(adapter_answer)
    if problem is None:
        return None
    return f"it answers degenerately ({problem}) while the base model answers normally"


def candidates(
    running: Mapping[str, int], ended: Mapping[str, float], clean_at: float
) -> list[str]:
    """The adapters that may have corrupted an engine (pure): those running on it now,
    and those whose last request there ended after its last healthy answer."""
    return sorted(ref for ref in {*running, *ended} if running.get(ref, 0) > 0
                  or ended.get(ref, -1.0) >= clean_at)  # fmt: skip


@dataclass
class _Seen:
    """What one backend ran lately (adapter refs), and when it last answered well."""

    running: Counter[str] = field(default_factory=Counter)
    ended: dict[str, float] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    suspects: dict[str, Target] = field(default_factory=dict)
    clean_at: float = 0.0


class Holder(Protocol):
    """Where containment records its decisions (the resolver)."""

    async def quarantine(self, target: Target, reason: str) -> None: ...

    def hold(self, target: Target, reason: str) -> None: ...

    def release(self, target: Target) -> None: ...


class Containment:
    """Watches what each backend runs; checks, replays and quarantines as judged."""

    def __init__(
        self,
        holder: Holder,
        metrics: Metrics,
        timeout_s: float,
        restart: Mapping[str, probe.Restart],
    ) -> None:
        self._holder = holder
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._restart = restart
        self._seen: dict[str, _Seen] = {}
        self._slots: dict[str, AdapterSlots] = {}
        self._checking: dict[str, asyncio.Task[None]] = {}
        self._cleared: dict[tuple[str, str], float] = {}  # (backend, ref) -> found fine at

    def watch(self, slots: list[AdapterSlots]) -> None:
        """The backends this gateway serves from (for `check`)."""
        self._slots = {s.backend.label: s for s in slots}

    def check(self, label: str) -> None:
        """Check backend `label` now (the readiness probe was unsure under load)."""
        slots = self._slots.get(label)
        if slots is not None and label not in self._checking:
            self._start(slots)

    def corrupted(self, label: str, found: probe.Verdict) -> None:
        """The readiness probe, alone on backend `label`, found its engine corrupted: hold
        what may have done it, replace the engine, replay each alone. A check of it under
        way sees the same engine and decides instead."""
        slots = self._slots.get(label)
        if slots is None:
            return
        if label not in self._checking:
            self._start(slots, found)

    def _of(self, slots: AdapterSlots) -> _Seen:
        return self._seen.setdefault(slots.backend.label, _Seen())

    def started(self, slots: AdapterSlots, target: Target) -> None:
        """A request of `target` is going to `slots`' backend."""
        if target.adapter is not None:
            seen = self._of(slots)
            seen.running[target.ref] += 1
            seen.targets[target.ref] = target

    def ended(self, slots: AdapterSlots, target: Target) -> None:
        """That request ended (answered, failed or abandoned)."""
        if target.adapter is not None:
            seen = self._of(slots)
            seen.running[target.ref] -= 1
            if seen.running[target.ref] <= 0:
                del seen.running[target.ref]
            seen.ended[target.ref] = time.monotonic()

    def clean(self, label: str, started_at: float) -> None:
        """The base model answered a probe of backend `label` that began at `started_at`
        as it should: whatever ended before that did not corrupt it."""
        seen = self._seen.setdefault(label, _Seen())
        seen.clean_at = max(seen.clean_at, started_at)
        seen.ended = {r: t for r, t in seen.ended.items() if t >= seen.clean_at}
        seen.targets = {
            r: t for r, t in seen.targets.items() if r in seen.running or r in seen.ended
        }

    def suspect(self, slots: AdapterSlots, target: Target) -> None:
        """`target` just answered degenerately on `slots`' backend: check it."""
        label = slots.backend.label
        key = target.ref if target.adapter is not None else BASE
        cleared = self._cleared.get((label, key))
        if cleared is not None and time.monotonic() - cleared < RECHECK_AFTER_S:
            return
        if target.adapter is not None:
            self._of(slots).suspects[target.ref] = target
        if label not in self._checking:
            self._start(slots)

    def _start(self, slots: AdapterSlots, found: probe.Verdict | None = None) -> None:
        label = slots.backend.label
        task = asyncio.create_task(self._check(slots, found))
        self._checking[label] = task
        task.add_done_callback(lambda _: self._checking.pop(label, None))

    async def idle(self) -> None:
        """Wait for the checks under way (tests, shutdown)."""
        await asyncio.gather(*self._checking.values(), return_exceptions=True)

    async def _check(self, slots: AdapterSlots, found: probe.Verdict | None = None) -> None:
        """Look at a backend (see the module docstring). `found`: the readiness probe has
        already judged its engine corrupted, alone on it."""
        backend = slots.backend
        try:
            seen = self._of(slots)
            if found is None:
                found = await self._corruption(slots, seen)
            if found is None:
                return
            refs = candidates(seen.running, seen.ended, seen.clean_at)
            suspects = [seen.targets[r] for r in refs if r in seen.targets]
            seen.suspects.clear()  # answers of the corrupted engine: among the candidates
            await self._contain(slots, suspects, found)
            while seen.suspects:  # reported meanwhile, once the engine was replaced
                _, target = seen.suspects.popitem()
                await self._judge_alone(slots, target)
        except Exception:  # a failed check must never take the gateway down
            log.exception("containment check of backend %s failed", backend.label)

    async def _corruption(self, slots: AdapterSlots, seen: _Seen) -> probe.Verdict | None:
        """The base probe's verdict where the engine is corrupted; None where it is not
        (each suspect then judged) or where nothing could be concluded."""
        backend = slots.backend
        if await self._looks_fine(slots, seen):
            return None
        async with self._drained(slots):
            started = time.monotonic()
            run = await self._probe_base(slots)
        if run.alone and probe.corrupted(run.verdict, backend.state.base_answer is not None):
            return run.verdict
        if not run.alone or run.verdict.degraded:
            # traffic from elsewhere, a timeout or an error: no evidence either way
            log.warning("containment: no conclusive probe of backend %s", backend.label)
            seen.suspects.clear()
            return None
        self.clean(backend.label, started)
        self._mark_cleared(backend.label, BASE)  # base answers: not checked again soon
        while seen.suspects:
            _, target = seen.suspects.popitem()
            await self._judge_alone(slots, target)
        return None

    async def _looks_fine(self, slots: AdapterSlots, seen: _Seen) -> bool:
        """A first look without draining (most checks end here): the base model answers
        well under load, and each suspect answers the probe well. Anything else is looked
        at again alone, on a drained engine. True: nothing more to do."""
        started = time.monotonic()
        run = await self._probe_base(slots)
        if run.verdict.reason != "ok":
            return False
        self.clean(slots.backend.label, started)
        self._mark_cleared(slots.backend.label, BASE)
        while seen.suspects:
            _, target = seen.suspects.popitem()
            answer = await self._ask(slots, target)
            if answer is not None and probe.degenerate(answer) is None:
                self._mark_cleared(slots.backend.label, target.ref)
                continue
            await self._judge_alone(slots, target)
        return True

    @asynccontextmanager
    async def _drained(self, slots: AdapterSlots) -> AsyncIterator[None]:
        """No new request goes to the backend (they queue in the gateway, up to
        QUEUE_WHILE_DRAINED_S, or go to another backend), and those in flight there get
        up to DRAIN_WAIT_S to finish: what is probed then runs alone."""
        state = slots.backend.state
        async with state.probing:  # the readiness probe's round ends first, and waits
            state.draining = True
            try:
                deadline = time.monotonic() + DRAIN_WAIT_S
                while state.in_flight > 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                yield
            finally:
                state.draining = False

    async def _contain(
        self, slots: AdapterSlots, suspects: list[Target], seen: probe.Verdict
    ) -> None:
        """The engine is corrupted: hold the suspects, replace it, replay each alone."""
        backend = slots.backend
        log.error(
            "backend %s: the engine is corrupted (%s); holding %s and replacing it",
            backend.label, seen.detail, [t.ref for t in suspects] or "no adapter",
        )  # fmt: skip
        reason = f"backend {backend.label} is being replaced after its engine was corrupted"
        held = list(suspects)
        for target in held:
            self._holder.hold(target, reason)
        # Every hold ends here, however this ends: a backend that does not come back
        # within READY_WAIT_S (or a check that fails) must not leave adapters refused on
        # every backend until the gateway restarts.
        try:
            self._replace(slots, seen)
            while held:
                if not await self._judge_alone(slots, held[0]):
                    log.error("backend %s did not come back; releasing its suspects", backend.label)
                    return
                self._holder.release(held.pop(0))
            if await self._wait_ready(slots):
                self.clean(backend.label, time.monotonic())
        finally:
            for target in held:
                self._holder.release(target)

    async def _judge_alone(self, slots: AdapterSlots, target: Target) -> bool:
        """Once the backend serves, run `target` alone on it, then the base probe;
        quarantine it if judged so (and replace a backend it corrupted). False: the
        backend never came back."""
        if not await self._wait_ready(slots):
            return False
        state = slots.backend.state
        for _ in range(ALONE_TRIES):
            async with self._drained(slots):
                if state.base_answer is None:  # a fresh engine: learn its base answer first
                    first = await self._probe_base(slots)
                    if first.verdict.reason == "ok" and first.alone:
                        state.base_answer = first.text
                answer = await self._ask(slots, target)
                run = await self._probe_base(slots)
            if run.alone:
                break
        else:  # traffic from elsewhere each time: no evidence either way
            log.warning("containment: %s could not be judged alone", target.ref)
            return True
        reason = verdict(run.verdict, answer, state.base_answer is not None)
        if reason is None:
            self._mark_cleared(slots.backend.label, target.ref)
            return True
        log.error("quarantining %s: %s", target.ref, reason)
        await self._holder.quarantine(target, reason)
        self._metrics.quarantines.labels(*target.series.values()[:2]).inc()
        if probe.corrupted(run.verdict, True):
            self._replace(slots, run.verdict)
        elif target.lora_name is not None:
            await slots.evict(target.lora_name)
        return True

    def _mark_cleared(self, label: str, key: str) -> None:
        self._cleared[(label, key)] = time.monotonic()
        if len(self._cleared) > 4096:  # keys are registry refs, but stay bounded
            self._cleared.clear()

    def _replace(self, slots: AdapterSlots, seen: probe.Verdict) -> None:
        """Take a corrupted backend out of rotation; restart it when it is ours."""
        backend = slots.backend
        self._metrics.probe_failures.labels(backend.label, seen.reason).inc()
        backend.state.judged(True, seen.detail)
        self._metrics.backend_degraded.labels(backend.label).set(1)
        restart = self._restart.get(backend.label)
        if restart is not None:
            restart(seen.detail)

    async def _wait_ready(self, slots: AdapterSlots) -> bool:
        """Until the backend serves again (the probe brings it back), at most READY_WAIT_S."""
        deadline = time.monotonic() + READY_WAIT_S
        while not slots.backend.state.ready:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)
        return True

    async def _probe_base(self, slots: AdapterSlots) -> probe.ProbeRun:
        run = await probe.probe_once(slots.backend, self._timeout_s)
        for _ in range(probe.CHANGED_RETRIES):
            if run.verdict.reason != "changed":
                break
            run = await probe.probe_once(slots.backend, self._timeout_s)
        return run

    async def _ask(self, slots: AdapterSlots, target: Target) -> str | None:
        """`target`'s own greedy answer to the probe's question (None: no answer)."""
        try:
            async with slots.use(target) as model_name:
                data = await asyncio.wait_for(
                    slots.backend.generate("/v1/chat/completions", probe.probe_body(model_name)),
                    self._timeout_s,
                )
        except Exception:  # a timeout or a failure: no evidence
            log.warning("containment: %s did not answer the probe", target.ref)
            return None
        choices = data.get("choices") or [{}]
        return str((choices[0].get("message") or {}).get("content") or "")
