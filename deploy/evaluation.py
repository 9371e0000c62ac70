"""The eval gate before a rollout's first step: the canary must not score worse than the
stable version on a canary set by more than ``--max-regression`` (relative).

The canary set is JSON Lines, one chat per line, in the training data's shape: either
``{"messages": [..., {"role": "assistant", "content": EXPECTED}]}`` or ``{"messages":
[...], "expected": EXPECTED}``. Each prompt is sent through a gateway on the two pinned
refs (``NAME@STABLE``, ``NAME@CANARY``: pinned refs are never split), greedy, and each
answer is scored by token F1 against the expected answer (SQuAD's measure: the overlap
of lower-cased words); a version's score is the mean. Scoring is a pure function.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MAX_EXAMPLES = 1000
_WORD = re.compile(r"\w+", re.UNICODE)


class EvalError(ValueError):
    """The canary set or the gateway cannot give a score; the message says why."""


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, Any]]
    expected: str


def load(path: Path) -> list[Example]:
    """The canary set at ``path`` (see the module docstring)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"cannot read the eval set {path}: {e}") from None
    out: list[Example] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            messages = list(row["messages"])
            expected = row.get("expected")
            if expected is None and messages and messages[-1].get("role") == "assistant":
                expected = messages.pop()["content"]
            if not isinstance(expected, str) or not messages:
                raise ValueError("no expected answer")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise EvalError(f"{path}:{number} is not an eval example: {e}") from None
        out.append(Example(messages, expected))
    if not out or len(out) > MAX_EXAMPLES:
        raise EvalError(f"{path} holds {len(out)} examples; an eval set needs 1 to {MAX_EXAMPLES}")
    return out


def f1(answer: str, expected: str) -> float:
    """Token F1 of ``answer`` against ``expected`` (1.0 when both are empty)."""
    got = Counter(w.lower() for w in _WORD.findall(answer))
    want = Counter(w.lower() for w in _WORD.findall(expected))
    if not got or not want:
        return float(got == want)
    overlap = sum((got & want).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(got.values()), overlap / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def score(gateway: str, ref: str, examples: list[Example], *, max_tokens: int = 64) -> float:
    """Mean token F1 of ``ref``'s greedy answers, asked through ``gateway``."""
    total = 0.0
    with httpx.Client(base_url=gateway.rstrip("/"), timeout=120) as client:
        for ex in examples:
            body = {"model": ref, "messages": ex.messages, "temperature": 0,
                    "max_tokens": max_tokens}  # fmt: skip
            try:
                r = client.post("/v1/chat/completions", json=body)
            except httpx.HTTPError as e:
                raise EvalError(f"the gateway {gateway} could not be asked: {e}") from None
            if r.status_code != 200:
                raise EvalError(f"{ref} answered HTTP {r.status_code}: {r.text[:200]}")
            answer = r.json()["choices"][0]["message"].get("content") or ""
            total += f1(str(answer), ex.expected)
    return total / len(examples)


@dataclass(frozen=True)
class GateResult:
    stable: float
    canary: float
    max_regression: float

    @property
    def passed(self) -> bool:
        return self.canary >= self.stable * (1 - self.max_regression)

    def reason(self) -> str:
        change = (self.canary - self.stable) / self.stable if self.stable > 0 else 0.0
        verdict = "passed" if self.passed else "failed"
        return (
            f"eval gate {verdict}: canary {self.canary:.3f} vs stable {self.stable:.3f} "
            f"({change:+.1%}; --max-regression {self.max_regression:g})"
        )
