"""Gate verdicts are a pure function of the worker's raw figures (table-driven)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from quantize.fidelity import gate_failures, judge, perplexity, task_score
from quantize.measure import scored
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


def test_task_score_fields_needs_valid_json_and_right_fields() -> None:
    rows = [{"fields": {"name": "Ann"}}] * 4
    texts = ['{"name":"Ann"}', '{"name":"Bob"}', "not json", '{"name":"Ann","x":1}']
    assert task_score("fields", texts, rows, SCHEMA) == 0.25
    assert task_score(None, texts, rows, SCHEMA) is None


def test_a_task_drop_past_the_gate_fails_the_pair() -> None:
    rows = [{"label": "billing"}] * 10
    ref, cand = ["billing"] * 10, ["billing"] * 8 + ["returns"] * 2
    verdict = judge(raw(10.0, 10.0, (1, 1), ref, cand), GATE, task="label", eval_rows=rows)
    assert verdict.figures["task_score"] == pytest.approx(
        {"reference": 1.0, "candidate": 0.8, "drop": 0.2}
    )
    assert verdict.failed == ("task_score",)
    within = ["billing"] * 9 + ["returns"]
    assert judge(raw(10.0, 10.0, (1, 1), ref, within), GATE, task="label", eval_rows=rows).passed


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("readings", "failed", "words"),
    [
        ([("perplexity_ratio.eval", 1.01), ("token_agreement", 0.95)], (), ()),
        # Issue 17: NaN compares false against every bound; it must fail, naming the figure.
        ([("perplexity_ratio.eval", NAN), ("token_agreement", 1.0)], ("perplexity_ratio",),
         ("perplexity_ratio.eval is NaN",)),
        ([("perplexity_ratio.eval", None), ("token_agreement", 1.0)], ("perplexity_ratio",),
         ("perplexity_ratio.eval is missing",)),
        ([("perplexity_ratio.eval", 1.0), ("perplexity_ratio.heldout", INF),
          ("token_agreement", 1.0)], ("perplexity_ratio",), ("heldout is infinite",)),
        ([("perplexity_ratio", None), ("token_agreement", 1.0)], ("perplexity_ratio",),
         ("perplexity_ratio is missing",)),
        ([("perplexity_ratio.eval", 1.0), ("token_agreement", None)], ("token_agreement",),
         ("token_agreement is missing",)),
        ([("perplexity_ratio.eval", 1.0), ("token_agreement", NAN)], ("token_agreement",), ()),
        ([("perplexity_ratio.eval", 1.0), ("token_agreement", -INF)], ("token_agreement",), ()),
        ([("perplexity_ratio.eval", 1.0), ("token_agreement", 1.0), ("task_score.drop", None)],
         ("task_score",), ("task_score.drop is missing",)),
        ([("perplexity_ratio.eval", 1.0), ("token_agreement", 1.0), ("task_score.drop", NAN)],
         ("task_score",), ()),
        ([("perplexity_ratio.eval", 1.0), ("token_agreement", 1.0), ("task_score.drop", 0.1)],
         (), ()),
        ([("perplexity_ratio.eval", 1.2), ("token_agreement", 0.5), ("task_score.drop", 0.5)],
         ("perplexity_ratio", "token_agreement", "task_score"),
         ("perplexity_ratio 1.2 is above the gate's 1.05", "token_agreement 0.5 is below")),
        # The worst measured ratio is judged; a missing one fails even if another passes.
        ([("perplexity_ratio.eval", 1.0), ("perplexity_ratio.heldout", 1.06),
          ("token_agreement", 1.0)], ("perplexity_ratio",), ()),
        ([("perplexity_ratio.eval", 1.0), ("perplexity_ratio.heldout", None),
          ("token_agreement", 1.0)], ("perplexity_ratio",), ("heldout is missing",)),
    ],
)  # fmt: skip
def test_gate_failures(
    readings: list[tuple[str, float | None]], failed: tuple[str, ...], words: tuple[str, ...]
) -> None:
    got, reasons = gate_failures(readings, GATE)
    assert got == failed
    assert len(reasons) >= len(failed)
    for word in words:
        assert any(word in r for r in reasons), (word, reasons)


def _side(nll: list[list[float]], texts: list[list[float]], text: list[str]) -> dict[str, Any]:
    return {"answer_nll": nll, "text_nll": texts, "text": text}


@pytest.mark.parametrize(
    ("candidate", "agreement", "failed"),
    [
        # The pair: the engine blanked, NLL NaN, nothing compared.
        (_side([[NAN, 10]], [], [""]), (0, 0), ("perplexity_ratio", "token_agreement")),
        (_side([[NAN, 10]], [], ["a"]), (10, 10), ("perplexity_ratio",)),
        (_side([[INF, 10]], [], ["a"]), (10, 10), ("perplexity_ratio",)),
        (_side([[1e6, 10]], [], ["a"]), (10, 10), ("perplexity_ratio",)),  # exp() overflow
        (_side([], [], ["a"]), (10, 10), ("perplexity_ratio",)),  # reference has it, not this
        (_side([[10.0, 10]], [], ["a"]), (0, 0), ("token_agreement",)),
        (_side([[10.0, 10]], [], ["a"]), (10, 10), ()),
    ],
)
def test_judge_never_passes_missing_figures(
    candidate: dict[str, Any], agreement: tuple[int, int], failed: tuple[str, ...]
) -> None:
    reference = _side([[10.0, 10]], [], ["a"])
    verdict = judge({"reference": reference, "candidate": candidate, "agreement": agreement}, GATE)
    assert verdict.failed == failed
    assert verdict.figures["gate_reasons"] == list(verdict.reasons)
    json.dumps(verdict.figures, allow_nan=False)  # recordable: NaN becomes null


def test_a_perplexity_the_job_asked_for_is_required() -> None:
    empty = _side([], [], ["a"])
    raw = {"reference": empty, "candidate": empty, "agreement": (5, 5)}
    verdict = judge(raw, GATE, scored=("eval",))
    assert verdict.failed == ("perplexity_ratio",)
    assert "perplexity_ratio.eval is missing" in verdict.reasons[0]
    # An adapter the eval set has no reference answers for: judged on agreement alone.
    assert judge(raw, GATE, scored=()).passed
    measured = _side([[10.0, 10]], [], ["a"])
    raw = {"reference": measured, "candidate": measured, "agreement": (5, 5)}
    assert judge(raw, GATE, scored=("eval", "heldout")).failed == ("perplexity_ratio",)


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ({"answers": ["x", None], "texts": ["t"]}, ("eval", "heldout")),
        ({"answers": [None, None], "texts": []}, ()),
        ({"answers": [], "texts": ["t"]}, ("heldout",)),
    ],
)
def test_scored(job: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert scored(job) == expected


@pytest.mark.parametrize(
    ("texts", "generated", "failed"),
    [
        (["", " "], None, ("token_agreement",)),  # every answer empty
        (["x x x x", "x x x x"], [[5, 5, 5, 5], [5, 5, 5, 5]], ("token_agreement",)),
        (["", "Dear Ann"], None, ()),  # one empty answer of two: judged on its figures
        (["ok", "ok"], [[7, 2], [7, 2]], ()),  # a short answer is not a repeat
        (["aaaa", "Dear Ann"], [[5, 5, 5, 5], [9, 8, 7]], ()),
    ],
)
def test_answers_that_say_nothing_are_no_agreement(
    texts: list[str], generated: list[list[int]] | None, failed: tuple[str, ...]
) -> None:
    """An engine-blanking adapter makes parent and variant emit the same empty answers:
    agreement 1.0 on nothing. That figure is missing, not perfect."""
    side = _side([[10.0, 10]], [], texts)
    if generated is not None:
        side["generated"] = generated
    verdict = judge({"reference": side, "candidate": side, "agreement": (96, 96)}, GATE)
    assert verdict.failed == failed
    if failed:
        assert "every answer of the reference and the candidate is empty or one token" in str(
            verdict.reasons
        )
