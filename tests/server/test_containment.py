"""Containment's decisions, table-driven: which answers are degenerate, and when an
adapter is quarantined (the live test is in test_supervisor.py, on real vLLM)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from server import containment
from server.containment import (
    MIN_JUDGED_TOKENS,
    Containment,
    answer_problem,
    candidates,
    client_shaped,
    response_problem,
    verdict,
)
from server.metrics import Metrics
from server.probe import ProbeRun, Verdict, corrupted

OK = Verdict("ok", "ready")
CHANGED = Verdict("changed", "the base model's greedy answer to the probe changed")
EMPTY = Verdict("degenerate", "the generation probe produced degenerate text (empty output)")
TIMEOUT = Verdict("timeout", "the generation probe timed out with no progress")
ERROR = Verdict("error", "the generation probe failed")


@pytest.mark.parametrize(
    ("text", "finish", "tokens", "problem"),
    [
        ("", "stop", 0, "empty answer"),  # stopped at once: nothing said
        ("  \n", "stop", 2, "empty answer"),
        ("", "length", 16, "empty output"),  # 16 tokens that decode to nothing (3e38 adapter)
        (" fixed fixed fixed fixed fixed", "length", 16, "one word repeated"),
        ("returnsreturnsreturnsreturns", "length", 16, "one short piece repeated"),
        (",,,,,,,,,,,,", "length", 12, "one short piece repeated"),
        ("billing", "stop", 2, None),  # a one-word label is an answer
        ("Hello Ruby. I'm sorry to hear that", "length", 16, None),
        ('{"name":"Marcus","order_id":"A8167"}', "stop", 20, None),
        ("", "length", MIN_JUDGED_TOKENS - 1, None),  # asked for too little to judge
        ("aaaa", "length", 1, None),
        ("", None, MIN_JUDGED_TOKENS, "empty output"),
    ],
)
def test_answer_problem(text: str, finish: str | None, tokens: int, problem: str | None) -> None:
    assert answer_problem(text, finish, tokens) == problem


@pytest.mark.parametrize(
    ("base", "adapter_answer", "known_good", "quarantined", "engine_corrupted"),
    [
        (CHANGED, None, True, "the engine was corrupted", True),
        (EMPTY, None, True, "the engine was corrupted", True),
        (EMPTY, None, False, None, False),  # a base never seen answering well: no evidence
        (OK, "", True, "answers degenerately (empty output)", False),
        (OK, " fixed fixed fixed fixed", True, "answers degenerately (one word repeated)", False),
        (OK, "Hello, I can help with your order.", True, None, False),  # a one-off
        (OK, None, True, None, False),  # the adapter did not answer: no evidence
        (TIMEOUT, None, True, None, False),  # a slow engine says nothing about the adapter
        (ERROR, None, True, None, False),
    ],
)
def test_verdict(
    base: Verdict,
    adapter_answer: str | None,
    known_good: bool,
    quarantined: str | None,
    engine_corrupted: bool,
) -> None:
    reason = verdict(base, adapter_answer, known_good)
    if quarantined is None:
        assert reason is None
    else:
        assert reason is not None and quarantined in reason
    assert corrupted(base, known_good) is engine_corrupted


@pytest.mark.parametrize(
    ("answers", "tokens", "forced", "problem"),
    [
        ([("Hello Ruby.", "stop"), ("", "stop")], 6, False, "empty answer"),  # any choice
        ([("Hello Ruby.", "stop"), ("Hi there.", "stop")], 8, False, None),
        ([("ok ok ok ok ok ok ok ok", "length")], 8, True, None),  # ignore_eos: asked for
        ([("ok ok ok ok ok ok ok ok", "length")], 8, False, "one word repeated"),
        ([("", "length"), ("", "length")], 6, False, None),  # 3 tokens each: too few
        ([], 0, False, None),
    ],
)
def test_response_problem(
    answers: list[tuple[str, str | None]], tokens: int, forced: bool, problem: str | None
) -> None:
    assert response_problem(answers, tokens, forced) == problem


def test_one_check_per_backend_and_none_again_soon_after_a_clean_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bookkeeping only (the checks themselves run on real vLLM in test_supervisor.py):
    degenerate answers arriving while a check runs start no second one, and a target
    found fine is not checked again within RECHECK_AFTER_S, so a client cannot make
    the gateway probe on every answer it provokes."""
    probes: list[tuple[str, bool]] = []  # (what, was the backend drained)

    async def probe_once(backend: SimpleNamespace, timeout_s: float) -> ProbeRun:
        probes.append(("base", backend.state.draining))
        await asyncio.sleep(0.01)
        return ProbeRun(OK, "Hello Ruby.", True)

    async def ask(self: Containment, slots: SimpleNamespace, target: object) -> str:
        probes.append(("adapter", slots.backend.state.draining))
        return "Hello, how can I help?"

    monkeypatch.setattr(containment.probe, "probe_once", probe_once)
    monkeypatch.setattr(Containment, "_ask", ask)
    state = SimpleNamespace(
        base_answer="Hello Ruby.", ready=True, in_flight=0, draining=False, probing=asyncio.Lock()
    )
    backend = SimpleNamespace(label="0", state=state)
    slots = SimpleNamespace(backend=backend)
    target = SimpleNamespace(ref="support@1", adapter=object())

    async def run() -> None:
        c = Containment(SimpleNamespace(), Metrics(), 1.0, {})
        for _ in range(5):  # five degenerate answers at once: one check
            c.suspect(slots, target)  # type: ignore[arg-type]
        await c.idle()
        # both answer well under load: a first look, undrained, is all it takes
        one_check = [("base", False), ("adapter", False)]
        assert probes == one_check
        assert not state.draining  # served again once the check is done
        c.suspect(slots, target)  # type: ignore[arg-type]
        await c.idle()
        assert probes == one_check  # found fine a moment ago
        monkeypatch.setattr(containment, "RECHECK_AFTER_S", 0.0)
        c.suspect(slots, target)  # type: ignore[arg-type]
        await c.idle()
        assert probes == one_check * 2

    asyncio.run(run())


@pytest.mark.parametrize(
    ("running", "ended", "clean_at", "suspects"),
    [
        ({}, {}, 0.0, []),
        ({"b@1": 1}, {}, 10.0, ["b@1"]),  # still running: always a suspect
        ({}, {"a@1": 5.0, "b@1": 12.0}, 10.0, ["b@1"]),  # a@1 ended before a clean probe
        ({}, {"a@1": 10.0}, 10.0, ["a@1"]),  # ended as the clean probe began: not cleared
        ({"c@2": 2}, {"a@1": 11.0, "c@2": 1.0}, 10.0, ["a@1", "c@2"]),
    ],
)
def test_candidates(
    running: dict[str, int], ended: dict[str, float], clean_at: float, suspects: list[str]
) -> None:
    assert candidates(running, ended, clean_at) == suspects


class _Holder:
    """Records containment's decisions (the resolver in the gateway)."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.ever_held: set[str] = set()
        self.quarantined: dict[str, str] = {}

    async def quarantine(self, target: SimpleNamespace, reason: str) -> None:
        self.quarantined[target.ref] = reason

    def hold(self, target: SimpleNamespace, reason: str) -> None:
        self.held.add(target.ref)
        self.ever_held.add(target.ref)

    def release(self, target: SimpleNamespace) -> None:
        self.held.discard(target.ref)


def _backend() -> SimpleNamespace:
    state = SimpleNamespace(
        base_answer="Hello Ruby.",
        ready=True,
        in_flight=0,
        draining=False,
        judged=lambda *a: None,
        probing=asyncio.Lock(),
    )
    return SimpleNamespace(slots=SimpleNamespace(backend=SimpleNamespace(label="0", state=state)))


def _target(ref: str) -> SimpleNamespace:
    return SimpleNamespace(
        ref=ref, adapter=object(), lora_name=None, series=SimpleNamespace(values=lambda: ["a", "1"])
    )


def test_degenerate_answers_of_the_base_model_do_not_probe_on_every_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was: a client asking the base model to repeat a word started a base probe per
    answer, for as long as it liked (RECHECK_AFTER_S held for adapters only)."""
    probes: list[str] = []

    async def probe_once(backend: object, timeout_s: float) -> ProbeRun:
        probes.append("base")
        return ProbeRun(OK, "Hello Ruby.", True)

    monkeypatch.setattr(containment.probe, "probe_once", probe_once)
    slots = _backend().slots
    base = SimpleNamespace(ref="tiny-base", adapter=None)

    async def run() -> None:
        c = Containment(_Holder(), Metrics(), 1.0, {})
        for _ in range(20):
            c.suspect(slots, base)  # type: ignore[arg-type]
            await c.idle()

    asyncio.run(run())
    assert probes == ["base"]


def test_holds_end_when_the_replay_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: a backend that did not come back within READY_WAIT_S (or a check that
    failed) left every suspect held, 503 adapter_under_check on every backend, until the
    gateway restarted."""
    corrupted_once = iter([ProbeRun(EMPTY, "", True)] * 2)  # the first look, then drained

    async def probe_once(backend: object, timeout_s: float) -> ProbeRun:
        return next(corrupted_once, ProbeRun(OK, "Hello Ruby.", True))

    monkeypatch.setattr(containment.probe, "probe_once", probe_once)
    monkeypatch.setattr(containment, "READY_WAIT_S", 0.0)
    slots = _backend().slots
    restarts: list[str] = []

    def restart(detail: str) -> None:  # the engine goes away and does not come back in time
        restarts.append(detail)
        slots.backend.state.ready = False

    holder = _Holder()
    good, other = _target("good@1"), _target("other@1")

    async def run() -> None:
        c = Containment(holder, Metrics(), 1.0, {"0": restart})
        for t in (good, other):
            c.started(slots, t)  # type: ignore[arg-type]
        c.suspect(slots, good)  # type: ignore[arg-type]
        await c.idle()

    asyncio.run(run())
    assert len(restarts) == 1
    assert holder.ever_held == {"good@1", "other@1"}  # held while the engine was replaced
    assert holder.held == set() and holder.quarantined == {}


@pytest.mark.parametrize(
    ("forward", "shaped"),
    [
        ({}, False),
        ({"temperature": 0.7, "max_tokens": 64, "stop": [], "logit_bias": {}}, False),
        ({"ignore_eos": True}, True),
        ({"stop": "{"}, True),  # a JSON adapter's answer stopped at once: "" (was judged)
        ({"stop": ["\n\n"]}, True),
        ({"stop_token_ids": [13]}, True),
        ({"logit_bias": {"1234": 100}}, True),  # one token forced: "ok ok ok ok"
        ({"bad_words": ["the"]}, True),
        ({"allowed_token_ids": [29871]}, True),
        ({"min_tokens": 50}, True),
        ({"repetition_penalty": 0.5}, True),
        ({"repetition_penalty": 1.2}, False),  # discourages repeats: not a way to make them
        ({"frequency_penalty": -2}, True),
        ({"presence_penalty": -0.5}, True),
        ({"frequency_penalty": 1.0, "presence_penalty": 0}, False),
    ],
)
def test_client_shaped(forward: dict[str, object], shaped: bool) -> None:
    """A client that shapes the output itself (stop strings, token bans or biases,
    penalties that reward repeats) can make any good adapter answer "" or one word
    repeated: was counted as the adapter's degenerate answer (a client landing on a
    canary arm could get a good canary rolled back) and started checks."""
    assert client_shaped(forward) is shaped


def test_a_bad_first_look_is_judged_again_on_a_drained_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under load the adapter's probe answer loops (another adapter's output leaking into
    the batch looks the same): no verdict then; alone, on a drained engine, it answers
    well, so it is cleared, not quarantined."""
    probes: list[tuple[str, bool]] = []

    async def probe_once(backend: SimpleNamespace, timeout_s: float) -> ProbeRun:
        probes.append(("base", backend.state.draining))
        return ProbeRun(OK, "Hello Ruby.", True)

    async def ask(self: Containment, slots: SimpleNamespace, target: object) -> str:
        drained = slots.backend.state.draining
        probes.append(("adapter", drained))
        return "Hello, how can I help?" if drained else ",,,,,,,,,,,,"

    monkeypatch.setattr(containment.probe, "probe_once", probe_once)
    monkeypatch.setattr(Containment, "_ask", ask)
    slots = _backend().slots
    holder = _Holder()

    async def run() -> None:
        c = Containment(holder, Metrics(), 1.0, {})
        c.suspect(slots, _target("good@1"))  # type: ignore[arg-type]
        await c.idle()

    asyncio.run(run())
    assert probes == [("base", False), ("adapter", False), ("adapter", True), ("base", True)]
    assert holder.quarantined == {} and not slots.backend.state.draining


def test_an_engine_the_readiness_probe_found_corrupted_is_contained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was: the readiness probe restarted a corrupted engine itself. A check started by the
    corrupting adapter's own answer then met the restart, could conclude nothing, and the
    adapter was never replayed (CI on an AVX2 machine: never quarantined). Now the probe
    hands the engine to containment: what ran since the last clean probe is held, the
    engine replaced, and each suspect replayed alone."""
    asked: list[tuple[str, bool]] = []

    async def probe_once(backend: SimpleNamespace, timeout_s: float) -> ProbeRun:
        blanked = asked and asked[-1][0] == "blaster@1"
        return ProbeRun(CHANGED if blanked else OK, "" if blanked else "Hello Ruby.", True)

    async def ask(self: Containment, slots: SimpleNamespace, target: SimpleNamespace) -> str:
        asked.append((target.ref, slots.backend.state.draining))
        return "Hello, how can I help?"

    monkeypatch.setattr(containment.probe, "probe_once", probe_once)
    monkeypatch.setattr(Containment, "_ask", ask)
    slots = _backend().slots
    restarts: list[str] = []
    holder = _Holder()
    blaster, triage, earlier = _target("blaster@1"), _target("triage@1"), _target("old@1")

    async def run() -> None:
        c = Containment(holder, Metrics(), 1.0, {"0": restarts.append})
        c.watch([slots])  # type: ignore[list-item]
        c.started(slots, earlier)  # type: ignore[arg-type]
        c.ended(slots, earlier)  # type: ignore[arg-type]
        c.clean("0", time.monotonic())  # a clean probe after it: not a suspect
        for t in (blaster, triage):
            c.started(slots, t)  # type: ignore[arg-type]
            c.ended(slots, t)  # type: ignore[arg-type]
        c.corrupted("0", CHANGED)
        c.corrupted("0", CHANGED)  # the next round, while the first is contained: no second
        await c.idle()

    asyncio.run(run())
    assert holder.ever_held == {"blaster@1", "triage@1"} and holder.held == set()
    assert sorted(asked) == [("blaster@1", True), ("triage@1", True)]  # each alone
    assert list(holder.quarantined) == ["blaster@1"]
    assert "engine was corrupted" in holder.quarantined["blaster@1"]
    assert len(restarts) == 2  # replaced, then replaced again after the replay blanked it


def test_the_readiness_probe_and_a_drained_check_never_probe_together() -> None:
    """Was: the readiness probe (every probe_interval_s) ran beside containment's probes
    on a drained engine, so neither ran alone, and a suspect went unjudged ("could not be
    judged alone"). A drained check waits for a round under way; a round skips a backend
    a check holds."""
    from server import probe
    from server.vllm_http import BackendState

    events: list[str] = []
    state = BackendState()

    class Backend:
        label = "0"

        def __init__(self) -> None:
            self.state = state

        async def health(self) -> bool:
            events.append("watch probes")
            await asyncio.sleep(0.05)
            events.append("watch done")
            return False

    slots = SimpleNamespace(backend=Backend())

    async def run() -> None:
        c = Containment(_Holder(), Metrics(), 1.0, {})
        backends: list[Any] = [slots.backend]
        watch = asyncio.create_task(probe.watch(backends, 0.01, 1.0, Metrics()))
        await asyncio.sleep(0.01)  # a round is under way
        async with c._drained(slots):  # type: ignore[arg-type]
            events.append("drained")
            await asyncio.sleep(0.2)  # rounds pass meanwhile: they skip the backend
            events.append("undrained")
        await asyncio.sleep(1.2)  # the next round (every second while not ready)
        watch.cancel()

    asyncio.run(run())
    drained = events.index("drained")
    assert events[drained - 1] == "watch done" and events[drained + 1] == "undrained"
    assert "watch probes" in events[drained + 2 :]  # probing again afterwards


def test_an_answer_reported_while_an_engine_is_contained_is_judged_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was: a degenerate answer reported while a containment ran (the engine being
    replaced) was dropped with the corrupted engine's answers, so an adapter answering ""
    on the fresh engine was never judged (CI: the looping adapter's test ran right after
    the NaN test's containment, and its adapter was never quarantined)."""

    async def probe_once(backend: SimpleNamespace, timeout_s: float) -> ProbeRun:
        return ProbeRun(OK, "Hello Ruby.", True)

    async def ask(self: Containment, slots: SimpleNamespace, target: SimpleNamespace) -> str:
        return "" if target.ref == "looper@1" else "Hello, how can I help?"

    monkeypatch.setattr(containment.probe, "probe_once", probe_once)
    monkeypatch.setattr(Containment, "_ask", ask)
    slots = _backend().slots
    holder = _Holder()
    looper = _target("looper@1")

    async def run() -> None:
        def restart(detail: str) -> None:  # the fresh engine then answers looper@1 with ""
            c.suspect(slots, looper)  # type: ignore[arg-type]

        c = Containment(holder, Metrics(), 1.0, {"0": restart})
        c.watch([slots])  # type: ignore[list-item]
        c.started(slots, _target("triage@1"))  # type: ignore[arg-type]
        c.corrupted("0", CHANGED)
        await c.idle()

    asyncio.run(run())
    assert holder.ever_held == {"triage@1"} and holder.held == set()
    assert list(holder.quarantined) == ["looper@1"]
    assert "answers degenerately" in holder.quarantined["looper@1"]
