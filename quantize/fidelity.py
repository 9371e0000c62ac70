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
- ``task_score``: for an adapter given a task kind (``QUANTIZE_TASKS`` / ``--task``):
  ``fields``, the answer is JSON, valid for its schema, equal to the eval row's
  ``fields``; ``label``, the answer is the row's ``label``; on both sides, and the drop;
- ``size_ratio``: the variant's weights on disk over the parent's.

A gate names what failed: ``perplexity_ratio``, ``token_agreement``, ``task_score``.
:func:`gate_failures` decides, and **never passes a gate on a missing figure**: a figure a
gate reads that is missing, None, NaN or infinite fails that gate, with a reason naming
the figure (an adapter whose weights blank the engine gives NaN perplexities and empty
texts; NaN compares false against every bound, so such a pair was once recorded as
passed). Which figures a gate reads: ``perplexity_ratio`` each perplexity the job asked
for (``eval`` when the eval set has reference answers for it, ``heldout`` when it has
held-out texts; missing on either side fails); ``token_agreement`` always (no token compared is a
missing figure, not agreement 1.0); ``task_score`` the drop, when the adapter has a
task. Agreement on answers that say nothing is no figure either: when every answer of a
side is empty or one token repeated to the length limit (:func:`degenerate`; what an
engine-blanking adapter gives on both sides alike), ``token_agreement`` is missing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from quantize.recipes import Gate

GATE_NAMES = ("perplexity_ratio", "token_agreement", "task_score")


@dataclass(frozen=True, slots=True)
class Verdict:
    figures: dict[str, Any]
    failed: tuple[str, ...]
    #: Why each gate failed, one line per figure (also in ``figures["gate_reasons"]``).
    reasons: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failed


def perplexity(nll: Sequence[Sequence[float]]) -> float | None:
    """exp(total NLL / total tokens) of (summed NLL, tokens) pairs; None when empty."""
    tokens = sum(int(n) for _, n in nll)
    if tokens == 0:
        return None
    mean = sum(float(s) for s, _ in nll) / tokens
    return math.inf if mean > 700 else math.exp(mean)  # exp() raises past ~709


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
        if task == "label":
            right += int(text.strip() == row.get("label"))
        elif task == "fields":
            right += int(_fields_right(text, row.get("fields"), schema))
    return right / len(texts)


def _fields_right(text: str, fields: Any, schema: dict[str, Any] | None) -> bool:
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


#: How a task's answers are scored against an eval row (the row key they are held to).
TASK_KINDS = ("fields", "label")

#: A reading of a gate: (figure name, value); the gate is the name's first part.
Reading = tuple[str, float | None]


def degenerate(text: str, tokens: Sequence[int] | None = None) -> bool:
    """An answer that says nothing: empty, or one token repeated to the length limit."""
    if not text.strip():
        return True
    return tokens is not None and len(tokens) >= 4 and len(set(tokens)) == 1


def _problem(value: float | None) -> str | None:
    if value is None:
        return "missing"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "infinite"
    return None


def gate_failures(
    readings: Sequence[Reading], gate: Gate, why: Mapping[str, str] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(failed gates, reasons): a gate fails on any of its figures that is not a finite
    number, else when its worst figure is past its bound. ``why`` says, by figure, why a
    figure is missing (the reason carries it)."""
    why = why or {}
    failed: list[str] = []
    reasons: list[str] = []
    bounds = {
        "perplexity_ratio": gate.max_perplexity_ratio,
        "token_agreement": gate.min_token_agreement,
        "task_score": gate.max_task_score_drop + 1e-9,  # a drop is a difference of shares
    }
    for name, bound in bounds.items():
        low = name == "token_agreement"  # the one gate whose figure must stay high
        mine = [(figure, value) for figure, value in readings if figure.split(".")[0] == name]
        if not mine:
            continue
        bad = [(f, _problem(v)) for f, v in mine if _problem(v) is not None]
        if bad:
            failed.append(name)
            reasons += [
                f"{f} is {problem}{f' ({why[f]})' if f in why else ''}: a gate never passes "
                "without its figure"
                for f, problem in bad
            ]
            continue
        values = [float(v) for _, v in mine if v is not None]
        worst = min(values) if low else max(values)
        if worst < bound if low else worst > bound:
            failed.append(name)
            word = "below" if low else "above"
            reasons.append(f"{name} {worst:.4g} is {word} the gate's {bound:.4g}")
    return tuple(failed), tuple(reasons)


def _perplexity_readings(
    ppl: Mapping[str, Mapping[str, float | None]],
    ratios: Mapping[str, float | None],
    scored: Collection[str] | None,
) -> list[Reading]:
    """The ratios the gate reads: those the job asked for (``scored``), else those either
    side measured; each must be there on both sides."""
    if scored is None:
        scored = [k for k in ratios if any(ppl[side][k] is not None for side in ppl)]
    return [(f"perplexity_ratio.{key}", ratios.get(key)) for key in scored]


def _finite_or_none(value: float | None) -> float | None:
    """What a figure is recorded as: JSON has no NaN or infinity (the reason says which)."""
    return value if value is not None and math.isfinite(value) else None


def _says_nothing(side: Mapping[str, Any]) -> bool:
    texts = side["text"]
    tokens = side.get("generated") or [None] * len(texts)
    return bool(texts) and all(degenerate(t, g) for t, g in zip(texts, tokens, strict=True))


def judge(
    raw: dict[str, Any],
    gate: Gate,
    *,
    task: str | None = None,
    eval_rows: Sequence[dict[str, Any]] = (),
    schema: dict[str, Any] | None = None,
    scored: Collection[str] | None = None,
) -> Verdict:
    """Figures and failed gates for one worker result (reference vs candidate).

    ``scored``: the perplexities the job asked for (``eval``: it had reference answers;
    ``heldout``: held-out texts); each is then required. None: whichever was measured.
    """
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
    agreement = same / total if total else None
    pairs = list(zip(ref["text"], cand["text"], strict=True))
    exact = sum(int(a == b) for a, b in pairs) / len(pairs) if pairs else 1.0
    score_ref = task_score(task, ref["text"], eval_rows, schema)
    score_cand = task_score(task, cand["text"], eval_rows, schema)
    drop = None if score_ref is None or score_cand is None else score_ref - score_cand
    why: dict[str, str] = {}
    blank = [
        side for side, data in (("reference", ref), ("candidate", cand)) if _says_nothing(data)
    ]
    if blank:
        # Agreeing with (or on) answers that say nothing measures nothing: an adapter that
        # blanks the engine makes both sides emit the same empty answers.
        agreement = None
        why["token_agreement"] = (
            f"every answer of the {' and the '.join(blank)} is empty or one token repeated"
        )
    readings = [*_perplexity_readings(ppl, ratios, scored), ("token_agreement", agreement)]
    if task is not None:
        readings.append(("task_score.drop", drop))
    failed, reasons = gate_failures(readings, gate, why)
    figures: dict[str, Any] = {
        "perplexity": {s: {k: _finite_or_none(v) for k, v in p.items()} for s, p in ppl.items()},
        "perplexity_ratio": {k: _finite_or_none(v) for k, v in ratios.items()},
        "token_agreement": None if agreement is None else round(agreement, 6),
        "exact_match": round(exact, 6),
        "task": task,
        "task_score": {"reference": score_ref, "candidate": score_cand, "drop": drop},
        "gate_reasons": list(reasons),
    }
    return Verdict(figures, failed, reasons)
