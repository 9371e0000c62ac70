"""Wire types as OpenAI's API has them: nothing coerced, each refusal names its field."""

import json

import pytest

from server.errors import InvalidRequestError
from server.protocol import parse, renamed

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


VLLM_ANSWER = (
    b'{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":"tiny",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"say \\"model\\":\\"tiny\\""},'
    b'"finish_reason":"length"}],"usage":{"prompt_tokens":9,"completion_tokens":8}}'
)


def test_renamed_changes_only_the_top_level_model_of_a_vllm_answer():
    out = renamed(VLLM_ANSWER, "tiny", "support-v1@3")
    assert out is not None
    expected = json.loads(VLLM_ANSWER)
    expected["model"] = "support-v1@3"
    assert json.loads(out) == expected  # the text that quotes "model" is untouched


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b'{"choices":[{"model":"tiny"}],"model":"tiny"}', "the first match is nested"),
        (b'{"meta":{"x":1},"model":"tiny"}', "a nested object comes before it"),
        (b'{"id":"a", "model": "tiny"}', "not compact: not vLLM's layout"),
        (b'{"id":"a","model":"other"}', "another name than the one sent"),
        (b'{"id":"a","model":"tiny","choices":[', "cut off"),
        (b'["model":"tiny"]', "not an object"),
        (b'{"id":"' + b"x" * 600 + b'","model":"tiny"}', "too far in"),
    ],
)
def test_renamed_leaves_anything_else_to_a_parse(answer, why):
    assert renamed(answer, "tiny", "a@1") is None, why


def test_renamed_needs_the_name_written_as_json_writes_it():
    sent = "t\u00e9"  # json.dumps escapes it, vLLM's serialiser may not: then parse
    assert renamed('{"id":"a","model":"t\u00e9"}'.encode(), sent, "a@1") is None
    assert renamed(b'{"id":"a","model":"t\\u00e9"}', sent, "a@1") == b'{"id":"a","model":"a@1"}'
