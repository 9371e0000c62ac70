"""The eval gate's pure parts: the canary set's format, token F1, the regression rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.evaluation import EvalError, GateResult, f1, load


@pytest.mark.parametrize(
    ("answer", "expected", "score"),
    [
        ("Dear Tomas, thank you.", "dear tomas thank you", 1.0),
        ("", "", 1.0),
        ("", "something", 0.0),
        ("nothing alike", "something else", 0.0),
        ("a b c d", "a b", 2 * 0.5 * 1.0 / 1.5),
        ("a a", "a", 2 * 0.5 * 1.0 / 1.5),  # repeated words count once per occurrence
    ],
)
def test_f1(answer: str, expected: str, score: float) -> None:
    assert f1(answer, expected) == pytest.approx(score)


def test_load_both_shapes(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    lines = [
        json.dumps({"messages": chat}),
        "",
        json.dumps({"messages": chat[:1], "expected": "hello"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    examples = load(path)
    assert [(e.messages, e.expected) for e in examples] == [(chat[:1], "yo"), (chat[:1], "hello")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json\n", ":1 is not an eval example"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', "no expected answer"),
        ('{"expected": "x"}\n', "messages"),
        ("\n\n", "holds 0 examples"),
    ],
)
def test_bad_sets(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(text)
    with pytest.raises(EvalError, match=match):
        load(path)


def test_missing_set(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="cannot read"):
        load(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    ("stable", "canary", "passed"),
    [(0.80, 0.80, True), (0.80, 0.761, True), (0.80, 0.759, False), (0.0, 0.0, True)],
)
def test_regression_rule(stable: float, canary: float, passed: bool) -> None:
    result = GateResult(stable, canary, 0.05)
    assert result.passed is passed
    assert ("passed" if passed else "failed") in result.reason()
