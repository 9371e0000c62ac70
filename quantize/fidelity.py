"""Fidelity figures and gate verdicts: pure functions over the worker's raw results.

The worker (in ``.venv-quantize``) computes negative log-likelihoods, greedy generations
and teacher-forced agreement for a reference model (the parent) and a candidate (the
variant), alone and with each adapter. Here those become:

- ``perplexity_ratio``: exp(mean NLL) of the candidate over the reference's, on the eval
  set's reference answers given their prompts (``eval``) and on held-out texts scored
  whole (``heldout``); the gate reads the larger of the two;
- ``token_agreement``: the share of the reference's greedy tokens that the candidate's
  argmax reproduces, teacher-forced on the reference's own continuation;
- ``exact_match``: the share of prompts whose whole greedy answer is identical;
- ``task_score``: for an adapter with a task in the eval set (``extract``: the answer is
  JSON, valid for its schema, with every field right; ``triage``: the label right), on
  both sides, and the drop;
- ``size_ratio``: the variant's weights on disk over the parent's.

A gate names what failed: ``perplexity_ratio``, ``token_agreement``, ``task_score``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from quantize.recipes import Gate

GATE_NAMES = ("perplexity_ratio", "token_agreement", "task_score")


@dataclass(frozen=True, slots=True)
class Verdict:
    figures: dict[str, Any]
    failed: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failed


def perplexity(nll: Sequence[Sequence[float]]) -> float | None:
    """exp(total NLL / total tokens) of (summed NLL, tokens) pairs; None when empty."""
    tokens = sum(int(n) for _, n in nll)
    if tokens == 0:
        return None
    return math.exp(sum(float(s) for s, _ in nll) / tokens)


def ratio(candidate: float | None, reference: float | None) -> float | None:
    if candidate is None or reference is None or reference == 0:
        return None
    return candidate / reference


def task_score(task: str | None, texts: Sequence[str], eval_rows: Sequence[dict[str, Any]],
               schema: dict[str, Any] | None) -> float | None:  # fmt: skip
    """The share of answers that do the task right (None: no task for this adapter)."""
    if task is None or not texts:
        return None
    right = 0
    for text, row in zip(texts, eval_rows, strict=True):
        if task == "triage":
            right += int(text.strip() == row.get("label"))
        elif task == "extract":
            right += int(_extract_right(text, row.get("fields"), schema))
    return right / len(texts)


def _extract_right(text: str, fields: Any, schema: dict[str, Any] | None) -> bool:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    if schema is not None:
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError:
            return False
    return bool(value == fields)


def judge(
    raw: dict[str, Any],
    gate: Gate,
    *,
    task: str | None = None,
    eval_rows: Sequence[dict[str, Any]] = (),
    schema: dict[str, Any] | None = None,
) -> Verdict:
    """Figures and failed gates for one worker result (reference vs candidate)."""
    ref, cand = raw["reference"], raw["candidate"]
    ppl = {
        side: {
            "eval": perplexity(data["answer_nll"]),
            "heldout": perplexity(data["text_nll"]),
        }
        for side, data in (("reference", ref), ("candidate", cand))
    }
    ratios = {k: ratio(ppl["candidate"][k], ppl["reference"][k]) for k in ("eval", "heldout")}
    same, total = raw["agreement"]
    agreement = same / total if total else 1.0
    pairs = list(zip(ref["text"], cand["text"], strict=True))
    exact = sum(int(a == b) for a, b in pairs) / len(pairs) if pairs else 1.0
    score_ref = task_score(task, ref["text"], eval_rows, schema)
    score_cand = task_score(task, cand["text"], eval_rows, schema)
    drop = None if score_ref is None or score_cand is None else score_ref - score_cand
    figures: dict[str, Any] = {
        "perplexity": ppl,
        "perplexity_ratio": ratios,
        "token_agreement": round(agreement, 6),
        "exact_match": round(exact, 6),
        "task": task,
        "task_score": {"reference": score_ref, "candidate": score_cand, "drop": drop},
    }
    worst = max((r for r in ratios.values() if r is not None), default=1.0)
    failed = []
    if worst > gate.max_perplexity_ratio:
        failed.append("perplexity_ratio")
    if agreement < gate.min_token_agreement:
        failed.append("token_agreement")
    if drop is not None and drop > gate.max_task_score_drop + 1e-9:
        failed.append("task_score")
    return Verdict(figures, tuple(failed))
