"""The eval gate before a rollout's first step: the canary must not score worse than the
stable version on a canary set by more than ``--max-regression`` (relative).

The canary set is JSON Lines, one chat per line, in the training data's shape: either
``{"messages": [..., {"role": "assistant", "content": EXPECTED}]}`` or ``{"messages":
[...], "expected": EXPECTED}``. Each prompt is sent through a gateway on the two pinned
refs (``NAME@STABLE``, ``NAME@CANARY``: pinned refs are never split), greedy, and each
answer is scored by token F1 against the expected answer (SQuAD's measure: the overlap
of lower-cased words); a version's score is the mean. Scoring and the verdict are pure
functions.

A gate never passes on a set that cannot fail: an expected answer without a word scores
an empty answer 1.0 (so a canary that answers nothing would pass on it), and a set the
stable version scores 0 on lets any canary pass (0 is no regression from 0). Both are
:class:`~deploy.errors.EvalSetUnusableError`, before the canary is asked. The gateway is
asked with the standard library (this runs in the product's environment, which has no
HTTP client of its own for synchronous use).
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from deploy.errors import (
    EvalGatewayError,
    EvalRegressionError,
    EvalSetError,
    EvalSetUnusableError,
)

MAX_EXAMPLES = 1000
MAX_SET_BYTES = 16 << 20
MAX_ANSWER_BYTES = 1 << 20
_WORD = re.compile(r"\w+", re.UNICODE)

Outcome = Literal["passed", "regressed", "unusable"]


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, Any]]
    expected: str


def load(path: Path) -> list[Example]:
    """The canary set at ``path`` (see the module docstring). :class:`EvalSetError` when
    it cannot be read or is not an eval set; :class:`EvalSetUnusableError` when an
    expected answer has no word."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SET_BYTES + 1)
        if len(raw) > MAX_SET_BYTES:
            raise EvalSetError(
                f"the eval set {path} is larger than {MAX_SET_BYTES >> 20} MiB; an eval set "
                f"holds at most {MAX_EXAMPLES} examples"
            )
        lines = raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EvalSetError(f"cannot read the eval set {path}: {e}") from None
    out: list[Example] = []
    wordless: list[int] = []
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
            if not all(isinstance(m, dict) for m in messages):
                raise ValueError("messages must be objects")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise EvalSetError(f"{path}:{number} is not an eval example: {e}") from None
        if not _WORD.search(expected):
            wordless.append(number)
        out.append(Example(messages, expected))
    if not out or len(out) > MAX_EXAMPLES:
        raise EvalSetError(
            f"{path} holds {len(out)} examples; an eval set needs 1 to {MAX_EXAMPLES}"
        )
    if wordless:
        shown = ", ".join(str(n) for n in wordless[:5])
        more = f" and {len(wordless) - 5} more" if len(wordless) > 5 else ""
        raise EvalSetUnusableError(
            f"{path}: {len(wordless)} of {len(out)} expected answers have no word (line "
            f"{shown}{more}); token F1 scores an empty answer 1.0 against them, so a canary "
            f"that answers nothing would pass. Give every example a real expected answer"
        )
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


def ask(gateway: str, ref: str, messages: list[dict[str, Any]], *, max_tokens: int,
        timeout_s: float) -> str:  # fmt: skip
    """``ref``'s greedy answer to one chat through ``gateway``; :class:`EvalGatewayError`
    when it cannot be had."""
    body = {"model": ref, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
    request = urllib.request.Request(
        f"{gateway.rstrip('/')}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read(MAX_ANSWER_BYTES)
    except urllib.error.HTTPError as e:
        detail = e.read(200).decode("utf-8", "replace")
        raise EvalGatewayError(f"{ref} answered HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
        raise EvalGatewayError(f"the gateway {gateway} could not be asked: {e}") from None
    try:
        content = json.loads(raw)["choices"][0]["message"].get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError(f"content is {type(content).__name__}")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise EvalGatewayError(
            f"the gateway {gateway} answered {ref} with something that is not a chat "
            f"completion: {e}"
        ) from None
    return content or ""


def score(gateway: str, ref: str, examples: list[Example], *, max_tokens: int = 64,
          timeout_s: float = 120.0) -> float:  # fmt: skip
    """Mean token F1 of ``ref``'s greedy answers, asked through ``gateway``."""
    total = 0.0
    for ex in examples:
        answer = ask(gateway, ref, ex.messages, max_tokens=max_tokens, timeout_s=timeout_s)
        total += f1(answer, ex.expected)
    return total / len(examples)


def stable_problem(stable: float) -> str | None:
    """Why a stable score makes the set unusable, or None (pure)."""
    if not math.isfinite(stable):
        return f"the stable version's score is not a number ({stable!r})"
    if stable <= 0:
        return (
            "the stable version scores 0 on this eval set: no canary can score below it, "
            "so the gate could not fail. Use a set whose expected answers stable gets at "
            "least partly right"
        )
    return None


@dataclass(frozen=True)
class GateResult:
    """Both scores and the verdict (pure): unusable (stable scores 0 or a score is not a
    number), regressed (canary below ``stable * (1 - max_regression)``), else passed."""

    stable: float
    canary: float
    max_regression: float

    @property
    def outcome(self) -> Outcome:
        if stable_problem(self.stable) is not None or not math.isfinite(self.canary):
            return "unusable"
        if self.canary < self.stable * (1 - self.max_regression):
            return "regressed"
        return "passed"

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def reason(self) -> str:
        problem = stable_problem(self.stable)
        if problem is None and not math.isfinite(self.canary):
            problem = f"the canary's score is not a number ({self.canary!r})"
        if problem is not None:
            return f"eval set unusable: {problem}"
        change = (self.canary - self.stable) / self.stable
        verdict = "passed" if self.passed else "failed"
        return (
            f"eval gate {verdict}: canary {self.canary:.3f} vs stable {self.stable:.3f} "
            f"({change:+.1%}; --max-regression {self.max_regression:g})"
        )

    def check(self) -> None:
        """Raise the outcome's error unless the gate passed."""
        if self.outcome == "unusable":
            raise EvalSetUnusableError(self.reason())
        if self.outcome == "regressed":
            raise EvalRegressionError(f"{self.reason()}; nothing was rolled out")
