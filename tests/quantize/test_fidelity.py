"""Gate verdicts are a pure function of the worker's raw figures (table-driven)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from quantize.fidelity import judge, perplexity, task_score
from quantize.recipes import Gate

GATE = Gate(max_perplexity_ratio=1.05, min_token_agreement=0.9, max_task_score_drop=0.1)
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
    "additionalProperties": False,
}


def raw(
    ref_nll: float, cand_nll: float, agree: tuple[int, int], ref: list[str], cand: list[str]
) -> dict[str, Any]:
    side = lambda nll, text: {"answer_nll": [[nll, 10]], "text_nll": [], "text": text}  # noqa: E731
    return {"reference": side(ref_nll, ref), "candidate": side(cand_nll, cand), "agreement": agree}


def test_perplexity_is_exp_of_mean_nll() -> None:
    assert perplexity([[10.0, 10], [30.0, 10]]) == pytest.approx(math.e**2)
    assert perplexity([]) is None


@pytest.mark.parametrize(
    ("cand_nll", "agree", "failed"),
    [
        (10.0, (95, 100), ()),
        (10.0 + 10 * math.log(1.06), (95, 100), ("perplexity_ratio",)),
        (10.0, (89, 100), ("token_agreement",)),
        (10.0 + 10 * math.log(1.2), (50, 100), ("perplexity_ratio", "token_agreement")),
    ],
)
def test_gates(cand_nll: float, agree: tuple[int, int], failed: tuple[str, ...]) -> None:
    verdict = judge(raw(10.0, cand_nll, agree, ["a"], ["a"]), GATE)
    assert verdict.failed == failed
    assert verdict.passed == (not failed)


def test_task_score_extract_needs_valid_json_and_right_fields() -> None:
    rows = [{"fields": {"name": "Ann"}}] * 4
    texts = ['{"name":"Ann"}', '{"name":"Bob"}', "not json", '{"name":"Ann","x":1}']
    assert task_score("extract", texts, rows, SCHEMA) == 0.25
    assert task_score(None, texts, rows, SCHEMA) is None


def test_a_task_drop_past_the_gate_fails_the_pair() -> None:
    rows = [{"label": "billing"}] * 10
    ref, cand = ["billing"] * 10, ["billing"] * 8 + ["returns"] * 2
    verdict = judge(raw(10.0, 10.0, (1, 1), ref, cand), GATE, task="triage", eval_rows=rows)
    assert verdict.figures["task_score"] == pytest.approx(
        {"reference": 1.0, "candidate": 0.8, "drop": 0.2}
    )
    assert verdict.failed == ("task_score",)
    within = ["billing"] * 9 + ["returns"]
    assert judge(raw(10.0, 10.0, (1, 1), ref, within), GATE, task="triage", eval_rows=rows).passed
