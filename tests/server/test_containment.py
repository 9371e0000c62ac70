"""Containment's decisions, table-driven: which answers are degenerate, and when an
adapter is quarantined (the live test is in test_supervisor.py, on real vLLM)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from server import containment
from server.containment import (
    MIN_JUDGED_TOKENS,
    Containment,
    answer_problem,
    candidates,
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
    probes: list[str] = []

    async def probe_once(backend: object, timeout_s: float) -> ProbeRun:
        probes.append("base")
        await asyncio.sleep(0.01)
        return ProbeRun(OK, "Hello Ruby.", True)

    async def ask(self: Containment, slots: object, target: object) -> str:
        probes.append("adapter")
        return "Hello, how can I help?"

    monkeypatch.setattr(containment.probe, "probe_once", probe_once)
    monkeypatch.setattr(Containment, "_ask", ask)
    state = SimpleNamespace(base_answer="Hello Ruby.", ready=True)
    backend = SimpleNamespace(label="0", state=state)
    slots = SimpleNamespace(backend=backend)
    target = SimpleNamespace(ref="support@1", adapter=object())

    async def run() -> None:
        c = Containment(SimpleNamespace(), Metrics(), 1.0, {})
        for _ in range(5):  # five degenerate answers at once: one check
            c.suspect(slots, target)  # type: ignore[arg-type]
        await c.idle()
        one_check = ["base", "adapter", "base"]  # the engine, the adapter alone, the engine
        assert probes == one_check
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
