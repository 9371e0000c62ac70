"""Wire types as OpenAI's API has them: nothing coerced, each refusal names its field."""

import json

import pytest

from server.errors import InvalidRequestError
from server.protocol import parse

MSGS = [{"role": "user", "content": "hi"}]


def chat(**fields: object) -> bytes:
    return json.dumps({"model": "m", "messages": MSGS, **fields}).encode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", "5"),
        ("max_tokens", True),
        ("max_tokens", 2.5),
        ("n", "2"),
        ("n", True),
        ("stream", "yes"),
        ("stream", 1),
        ("temperature", "hot"),
        ("temperature", True),
        ("top_p", [1]),
        ("seed", "7"),
        ("stop", 3),
        ("user", 5),
        ("ignore_eos", "true"),
        ("model", 7),
    ],
)
def test_wrong_types_are_400s_naming_the_field(field, value):
    with pytest.raises(InvalidRequestError) as e:
        parse("chat", chat(**{field: value}))
    assert e.value.param == field
    assert e.value.status == 400


def test_right_types_pass():
    _, req = parse("chat", chat(max_tokens=5, n=2, temperature=1, top_p=0.5, stop=["x"]))
    assert (req.max_tokens, req.n, req.temperature) == (5, 2, 1)


@pytest.mark.parametrize(
    ("prompt", "count", "size"),
    [
        ("hello", 1, (5, 0)),
        (["a", "bb"], 2, (3, 0)),
        ([1, 2, 3], 1, (0, 3)),
        ([[1, 2], [3]], 2, (0, 3)),
    ],
)
def test_prompt_count_and_size(prompt, count, size):
    _, req = parse("completions", json.dumps({"model": "m", "prompt": prompt}).encode())
    assert (req.prompt_count(), req.prompt_size()) == (count, size)


def test_a_body_nested_100000_deep_is_a_400():
    with pytest.raises(InvalidRequestError) as e:
        parse("chat", b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert "nested too deeply" in e.value.message
