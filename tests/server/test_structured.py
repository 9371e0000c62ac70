"""Structured-output decisions and checks (pure functions)."""

import json

import pytest

from server.errors import InvalidRequestError, InvalidSchemaError, StructuredOutputError
from server.structured import (
    MAX_SCHEMA_DEPTH,
    Constraint,
    check_result,
    check_schema,
    constraint_for,
    nesting_depth,
)

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["name", "n"],
    "additionalProperties": False,
}
ADAPTER = {"type": "object", "required": ["label"], "properties": {"label": {"type": "string"}}}


def rf(schema: object) -> dict[str, object]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


@pytest.mark.parametrize(
    ("response_format", "adapter_schema", "expected"),
    [
        (None, None, None),
        (None, ADAPTER, Constraint("json_schema", ADAPTER, "adapter")),
        ({"type": "text"}, ADAPTER, None),  # explicit opt-out of the adapter's schema
        ({"type": "json_object"}, None, Constraint("json_object", {"type": "object"}, "request")),
        (rf(SCHEMA), ADAPTER, Constraint("json_schema", SCHEMA, "request")),
    ],
)
def test_constraint_for(response_format, adapter_schema, expected):
    assert constraint_for(response_format, adapter_schema) == expected


def test_vllm_params():
    assert Constraint("json_object", {"type": "object"}, "request").vllm_params() == {
        "json_object": True
    }
    assert Constraint("json_schema", SCHEMA, "request").vllm_params() == {"json": SCHEMA}


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x"}},
        {"type": "json_schema", "json_schema": {"schema": "not an object"}},
        rf({"type": "objekt"}),
        rf({"type": "object", "required": "name"}),
    ],
)
def test_bad_response_format_is_a_400(bad):
    with pytest.raises(InvalidSchemaError) as e:
        constraint_for(bad, None)
    assert e.value.status == 400
    assert e.value.param and e.value.param.startswith("response_format")


def test_unknown_response_format_type_is_not_a_schema_error():
    with pytest.raises(InvalidRequestError) as e:
        constraint_for({"type": "yaml"}, None)
    assert not isinstance(e.value, InvalidSchemaError)
    assert (e.value.status, e.value.code, e.value.param) == (
        400,
        "invalid_response_format",
        "response_format.type",
    )


def nested(levels: int) -> dict[str, object]:
    schema: dict[str, object] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_deep_schema_is_a_400_not_a_recursion_error():
    check_schema(nested(MAX_SCHEMA_DEPTH // 2 - 1))  # two levels per object: fine
    for levels in (MAX_SCHEMA_DEPTH, 400, 5000):
        with pytest.raises(InvalidSchemaError) as e:
            constraint_for(rf(nested(levels)), None)
        assert "nested more than" in e.value.message


@pytest.mark.parametrize(
    ("value", "depth"), [(1, 0), ({}, 1), ([[]], 2), ({"a": [{"b": 1}]}, 3), ([1, [2, [3]]], 3)]
)
def test_nesting_depth(value, depth):
    assert nesting_depth(value, 10) == depth


def test_check_schema_accepts_real_schema():
    check_schema(SCHEMA)


def test_valid_result_is_returned_parsed():
    c = Constraint("json_schema", SCHEMA, "request")
    assert check_result(c, '{"name": "a", "n": 1}', "stop") == {"name": "a", "n": 1}


@pytest.mark.parametrize(
    ("text", "finish", "truncated", "status"),
    [
        ('{"name": "a", "n"', "length", True, 422),  # budget ran out mid-object
        ('{"name": "a"', "stop", False, 502),  # stopped early without the budget to blame
        ('{"name": "a", "n": "one"}', "stop", False, 502),  # wrong type
        ('{"name": "a"}', "stop", False, 502),  # required property missing
        ('{"name": "a", "n": 1, "x": 2}', "stop", False, 502),  # additional property
        ('{"name": "a\u0001", "n": 1}', "stop", False, 502),  # raw control char
        ("", "length", True, 422),
        ("12", "length", True, 422),  # parses, but a number cut short is still cut short
        ('{"name": "a", "n": 1}', "length", True, 422),  # the budget ran out: never trusted
    ],
)
def test_nonconforming_result_is_never_success(text, finish, truncated, status):
    c = Constraint("json_schema", SCHEMA, "request")
    with pytest.raises(StructuredOutputError) as e:
        check_result(c, text, finish)
    assert e.value.truncated is truncated
    assert e.value.status == status
    body = e.value.body()["error"]
    assert body["type"] == "structured_output_error"
    assert body["code"] == ("json_truncated" if truncated else "json_schema_violation")


def test_json_object_must_be_an_object():
    c = Constraint("json_object", {"type": "object"}, "request")
    assert check_result(c, json.dumps({"a": [1]}), "stop") == {"a": [1]}
    with pytest.raises(StructuredOutputError):
        check_result(c, "[1, 2]", "stop")
