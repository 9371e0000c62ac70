"""Admission (pure): a request's work estimate, and whether it may start beside the load.

Against a real gateway: tests/server/test_hardening.py (too_many_prompts, too_much_work,
429 on tokens in flight) and test_bad_input.py (429 on requests in flight)."""

import json

import pytest

from server.admission import InFlight, Limits, Load, admit, estimate, release
from server.errors import GatewayError
from server.metrics import Metrics, Series
from server.protocol import parse
from server.settings import GatewaySettings

LIMITS = Limits(max_prompts_per_request=16, max_tokens_in_flight=1000, max_in_flight=2)
HI16 = ["Hi"] * 16  # 32 characters: 8 tokens


def chat(*contents, **extra):
    messages = [{"role": "user", "content": c} for c in contents]
    return parse("chat", json.dumps({"model": "m", "messages": messages, **extra}).encode())[1]


def completion(prompt, **extra):
    return parse("completions", json.dumps({"model": "m", "prompt": prompt, **extra}).encode())[1]


@pytest.mark.parametrize(
    ("req", "budget", "work"),
    [
        (chat("abcd"), 10, 1 + 10),
        (chat("abcde"), 10, 2 + 10),  # a started token counts whole
        (chat("abcd", "abcd"), 10, 2 + 10),  # one sequence, however many messages
        (chat("abcd", stream=True), 10, 1 + 10),  # streaming changes nothing
        (chat("abcd", n=3), 10, 3 * (1 + 10)),  # each choice is a sequence
        (chat("abcd"), 999, 1000),  # exactly at max_tokens_in_flight
        (chat("abcd", n=2), 499, 2 * (1 + 499)),  # n brings it exactly to the limit
        (completion("Hello"), 10, 2 + 10),
        (completion(HI16), 10, 8 + 16 * 10),  # each prompt is a sequence
        (completion(HI16), 62, 8 + 16 * 62),  # many small prompts, exactly at the limit
        (completion(HI16, stream=True), 62, 1000),
    ],
)
def test_estimate(req, budget, work):
    assert estimate(req, budget, LIMITS) == work


@pytest.mark.parametrize(
    ("req", "budget", "code", "param", "message"),
    [
        (
            completion(["Hi"] * 17),
            10,
            "too_many_prompts",
            "prompt",
            "prompt is a list of 17 prompts; this gateway allows at most 16 per request "
            "(send several requests)",
        ),
        # the prompt count is checked first, whatever the work
        (completion(["Hi"] * 17), 1000, "too_many_prompts", "prompt", None),
        (
            chat("abcd"),
            1000,
            "too_much_work",
            "max_tokens",
            "this request asks for about 1001 tokens of work (prompts x n x max_tokens, plus "
            "its prompt); this gateway admits at most 1000 at once: lower max_tokens, n or "
            "the number of prompts",
        ),
        (chat("abcd", n=2), 500, "too_much_work", "max_tokens", None),  # n pushes it over
        (chat("abcd", n=16), 62, "too_much_work", "max_tokens", None),  # 16 x 63
        (completion(HI16), 63, "too_much_work", "max_tokens", None),  # 8 + 16 x 63 = 1016
        (completion(HI16, n=16), 400, "too_much_work", "max_tokens", None),
        (completion("x" * 4001), 1, "too_much_work", "max_tokens", None),  # the prompt alone
    ],
)
def test_estimate_refuses_what_no_load_could_admit(req, budget, code, param, message):
    with pytest.raises(GatewayError) as caught:
        estimate(req, budget, LIMITS)
    e = caught.value
    assert (e.status, e.type, e.code, e.param) == (400, "invalid_request_error", code, param)
    assert message is None or e.message == message
    assert "retry-after" not in e.headers


def test_token_id_prompts_are_counted_exactly():
    assert estimate(completion(list(range(1, 9))), 10, LIMITS) == 8 + 10
    assert estimate(completion([[1, 2, 3], [4]]), 10, LIMITS) == 4 + 2 * 10


@pytest.mark.parametrize(
    ("load", "work", "after"),
    [
        (Load(), 1000, Load(1, 1000)),  # a request of the whole budget, alone
        (Load(1, 500), 500, Load(2, 1000)),  # both bounds exactly reached
        (Load(1, 0), 1000, Load(2, 1000)),
        (Load(1, 999), 1, Load(2, 1000)),
    ],
)
def test_admit(load, work, after):
    assert admit(load, work, LIMITS) == after
    assert release(after, work) == load


@pytest.mark.parametrize(
    ("load", "work", "message"),
    [
        (
            Load(1, 500),
            501,
            "500 tokens of work in flight; this request's 501 would pass the limit of 1000",
        ),
        (
            Load(1, 1000),
            1,
            "1000 tokens of work in flight; this request's 1 would pass the limit of 1000",
        ),
        (Load(2, 0), 1, "2 requests in flight, the limit is 2"),
        (Load(2, 999), 2, "2 requests in flight, the limit is 2"),  # the count is checked first
    ],
)
def test_admit_refuses_what_does_not_fit_now(load, work, message):
    with pytest.raises(GatewayError) as caught:
        admit(load, work, LIMITS)
    e = caught.value
    assert (e.status, e.type, e.code, e.param) == (
        429,
        "rate_limit_error",
        "too_many_requests",
        None,
    )
    assert e.message == message
    assert e.headers == {"retry-after": "1"}


def decide(load, req, budget):
    """The status a request gets at admission, with `load` already in flight."""
    try:
        admit(load, estimate(req, budget, LIMITS), LIMITS)
    except GatewayError as e:
        return e.status
    return 200


@pytest.mark.parametrize(
    ("load", "req", "budget", "status"),
    [
        (Load(), chat("abcd"), 999, 200),
        (Load(), chat("abcd"), 1000, 400),  # over alone: never admissible, not retryable
        (Load(1, 1), chat("abcd"), 999, 429),  # fits alone, not beside what runs: retry
        (Load(1, 1), chat("abcd"), 1000, 400),  # over alone stays 400 under any load
        (Load(2, 0), chat("abcd"), 1000, 400),
        (Load(2, 0), chat("abcd"), 10, 429),
        (Load(1, 500), completion(["Hi"] * 17), 1, 400),
        (Load(1, 832), completion(HI16), 10, 200),  # 832 + 168 = 1000
        (Load(1, 833), completion(HI16), 10, 429),
    ],
)
def test_400_for_never_429_for_not_now(load, req, budget, status):
    assert decide(load, req, budget) == status


def test_limits_come_from_the_settings():
    s = GatewaySettings(max_prompts_per_request=3, max_tokens_in_flight=4, max_in_flight=5)
    assert Limits.of(s) == Limits(
        max_prompts_per_request=3, max_tokens_in_flight=4, max_in_flight=5
    )


def test_in_flight_counts_and_shows_the_load():
    metrics = Metrics()
    flight = InFlight(LIMITS, metrics)
    a, b = Series("triage", "1", "stable"), Series("base", "-", "stable")

    def shown():
        def get(name, **labels):
            return metrics.registry.get_sample_value(name, labels) or 0

        per = [get("loraport_adapter_in_flight_requests", **s._asdict()) for s in (a, b)]
        return get("loraport_in_flight_requests"), get("loraport_tokens_in_flight"), per

    assert flight.enter(600, a) == 1
    assert flight.enter(400, b) == 2
    assert flight.load == Load(2, 1000)
    assert shown() == (2, 1000, [1, 1])
    with pytest.raises(GatewayError):
        flight.enter(1, a)  # refused: nothing changes
    assert flight.load == Load(2, 1000)
    assert shown() == (2, 1000, [1, 1])
    flight.leave(600, a)
    assert flight.load == Load(1, 400)
    assert shown() == (1, 400, [0, 1])
    flight.leave(400, b)
    assert flight.load == Load()
    assert shown() == (0, 0, [0, 0])
