"""Structured output: which constraint a request carries, and whether a result meets it.

Enforced twice (docs/vllm.md says why: vLLM's constrained decoding alone let invalid
JSON through as success): vLLM constrains decoding with the schema, and the gateway
validates every result here before it may leave as a success. All pure functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from jsonschema import exceptions as js_exceptions
from jsonschema import validators

from server.errors import (
    InvalidRequestError,
    InvalidSchemaError,
    StructuredOutputError,
    UnsupportedSchemaError,
)
from server.schema_refs import reference_problem

JSON_OBJECT: dict[str, Any] = {"type": "object"}
MAX_SCHEMA_DEPTH = 32
"""Levels of objects and arrays a request's schema may nest (a schema keyword adds one)."""


@dataclass(frozen=True)
class Constraint:
    kind: Literal["json_object", "json_schema"]
    schema: dict[str, Any]
    source: Literal["request", "adapter"]

    def vllm_params(self) -> dict[str, Any]:
        """vLLM's per-request `structured_outputs` for this constraint."""
        if self.kind == "json_object":
            return {"json_object": True}
        return {"json": self.schema}


def constraint_for(
    response_format: dict[str, Any] | None, adapter_schema: dict[str, Any] | None
) -> Constraint | None:
    """The constraint a request runs under.

    No `response_format`: the adapter's own schema if it declared one at push time.
    `{"type": "text"}` opts out explicitly, even of an adapter's schema.
    """
    if response_format is None:
        if adapter_schema is None:
            return None
        return Constraint("json_schema", adapter_schema, "adapter")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint("json_object", JSON_OBJECT, "request")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidSchemaError(
                "response_format.json_schema.schema must be a JSON Schema object",
                param="response_format.json_schema.schema",
            )
        check_schema(schema)
        return Constraint("json_schema", schema, "request")
    raise InvalidRequestError(
        f"response_format.type must be text, json_object or json_schema, not {kind!r}",
        param="response_format.type",
        code="invalid_response_format",
    )


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse a schema that is not a valid JSON Schema (before vLLM is touched), one
    nested deeper than MAX_SCHEMA_DEPTH (grammar compilers and validators recurse), or
    one whose `$ref`s the gateway cannot enforce (server/schema_refs.py)."""
    depth = nesting_depth(schema, MAX_SCHEMA_DEPTH)
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidSchemaError(
            f"the JSON schema is nested more than {MAX_SCHEMA_DEPTH} levels deep",
            param="response_format.json_schema.schema",
        )
    try:
        _validator(_key(schema))
    except js_exceptions.SchemaError as e:
        path = "/".join(str(p) for p in e.path) or "(root)"
        raise InvalidSchemaError(
            f"invalid JSON Schema at {path}: {e.message}",
            param="response_format.json_schema.schema",
        ) from None
    problem = reference_problem(schema)
    if problem is not None:
        raise UnsupportedSchemaError(
            f"unsupported JSON schema: {problem}",
            param="response_format.json_schema.schema",
        )


def check_result(constraint: Constraint, text: str, finish_reason: str | None) -> Any:
    """The parsed value if `text` meets the constraint; otherwise StructuredOutputError.

    A budget that ran out (`finish_reason: length`) is always truncation, whatever the text
    parses as: `12` cut from `1234` is valid JSON and still not the answer. Parsing is
    strict: a raw control character inside a string is invalid JSON.
    """
    if finish_reason == "length":
        raise StructuredOutputError(
            "the token budget ran out before the JSON value was complete "
            f"({len(text)} characters produced); raise max_tokens",
            truncated=True,
        )
    try:
        value = json.loads(text)
    except RecursionError:
        raise StructuredOutputError(
            "the backend produced JSON nested too deeply to check", truncated=False
        ) from None
    except ValueError as e:
        raise StructuredOutputError(
            f"the backend produced text that is not valid JSON: {e}", truncated=False
        ) from None
    try:
        errors = _validator(_key(constraint.schema)).iter_errors(value)
        error = js_exceptions.best_match(errors)
    except RecursionError:  # a deep value under a recursive schema
        raise StructuredOutputError(
            "the backend produced JSON nested too deeply to check", truncated=False
        ) from None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise StructuredOutputError(
            f"the result breaks the JSON schema at {where}: {error.message}", truncated=False
        )
    return value


def nesting_depth(value: Any, limit: int) -> int:
    """How deep `value` nests (a scalar is 0), counted up to `limit + 1` and no further, so
    an absurd input costs no more than a legal one. Iterative: no RecursionError."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def _key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)


@lru_cache(maxsize=256)
def _validator(key: str) -> Any:
    schema = json.loads(key)
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)
