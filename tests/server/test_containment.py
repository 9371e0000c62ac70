"""Containment's decisions, table-driven: which answers are degenerate, and when an
adapter is quarantined (the live test is in test_supervisor.py, on real vLLM)."""

from __future__ import annotations

import pytest

from server.containment import MIN_JUDGED_TOKENS, answer_problem, verdict
from server.probe import Verdict, corrupted

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
