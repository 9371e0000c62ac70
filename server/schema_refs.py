"""`$ref` in a request's JSON schema: which references the gateway can enforce.

A schema may refer to parts of itself (`"$ref": "#/$defs/node"`): a tree whose children
are trees is fine. Two shapes are not, and both used to reach vLLM and come back as
502 `json_schema_violation` after a whole generation:

- a reference that reaches itself without descending into the value (`{"$ref": "#"}`,
  or `a` is `allOf [b]` and `b` is `$ref a`): checking any value recurses forever;
- a reference with no way out: every value must contain another value of the same
  schema (`node` requires a property `next` that is a `node`), so no finite JSON value
  conforms and the model can only run out of tokens.

:func:`reference_problem` finds either, and references the gateway cannot follow
(anything but a JSON pointer into the schema itself: no remote `$ref`, which the
validator would otherwise try to resolve after generation). Pure and iterative: an
absurd schema costs no more than its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

#: Keywords whose value is one subschema, a map of them, or a list of them.
_ONE = ("not", "if", "then", "else", "additionalItems", "additionalProperties", "contains",
        "propertyNames", "unevaluatedItems", "unevaluatedProperties", "contentSchema")  # fmt: skip
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
#: Keywords that apply their subschemas to the same value (not to a part of it).
_SAME_VALUE_ONE = ("not", "if", "then", "else")
_SAME_VALUE_LIST = ("allOf", "anyOf", "oneOf")
_SAME_VALUE_MAP = ("dependentSchemas",)
_UNSUPPORTED = ("$dynamicRef", "$recursiveRef")


def reference_problem(schema: dict[str, Any]) -> str | None:
    """Why the gateway cannot enforce ``schema``'s references, or None if it can."""
    nodes: dict[str, Any] = {}
    has_ref = _has_ref(schema)
    pending = list(_subschemas("#", schema))
    while pending:
        pointer, node = pending.pop()
        if pointer in nodes:
            continue
        nodes[pointer] = node
        if not isinstance(node, dict):
            continue
        for keyword in _UNSUPPORTED:
            if keyword in node:
                return f"{keyword} (at {pointer}) is not supported; use $ref to #/$defs/..."
        if pointer != "#" and "$id" in node and has_ref:
            return f"$id inside the schema (at {pointer}) is not supported together with $ref"
        ref = node.get("$ref")
        if ref is not None:
            target = _resolve(schema, ref)
            if isinstance(target, str):
                return f"$ref {ref!r} at {pointer}: {target}"
            pending.append((_canonical(ref), target[0]))
        pending.extend(_subschemas(pointer, node))
    return _left_recursion(nodes) or _no_way_out(nodes)


def _has_ref(schema: Any) -> bool:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "$ref" in node:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _subschemas(pointer: str, node: Any) -> Iterator[tuple[str, Any]]:
    """(pointer, subschema) for the root (pointer ``#``) and each direct subschema."""
    if pointer == "#" and not isinstance(node, dict | bool):
        return
    if pointer == "#":
        yield "#", node
    if not isinstance(node, dict):
        return
    for key in _ONE:
        if isinstance(node.get(key), dict | bool):
            yield f"{pointer}/{_escape(key)}", node[key]
    for key in _MAP:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                if isinstance(sub, dict | bool):
                    yield f"{pointer}/{_escape(key)}/{_escape(name)}", sub
    for key in (*_LIST, "items"):
        value = node.get(key)
        if isinstance(value, list):
            for i, sub in enumerate(value):
                if isinstance(sub, dict | bool):
                    yield f"{pointer}/{_escape(key)}/{i}", sub
        elif key == "items" and isinstance(value, dict | bool):
            yield f"{pointer}/items", value


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _canonical(ref: str) -> str:
    """A ref as the pointer form :func:`_subschemas` uses (``#/a/b``, no trailing ``/``)."""
    tokens = _tokens(ref)
    return "#" + "".join(f"/{_escape(t)}" for t in tokens or ())


def _tokens(ref: str) -> list[str] | None:
    if ref == "#":
        return []
    if not ref.startswith("#/"):
        return None
    return [unquote(t).replace("~1", "/").replace("~0", "~") for t in ref[2:].split("/")]


def _resolve(schema: dict[str, Any], ref: Any) -> tuple[Any] | str:
    """(target,) for a local JSON-pointer ref, else why not."""
    if not isinstance(ref, str):
        return "a $ref must be a string"
    tokens = _tokens(ref)
    if tokens is None:
        return (
            "only references into this schema are supported (#, or a JSON pointer such as "
            "#/$defs/NAME); remote and anchor references are not"
        )
    node: Any = schema
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return "it points at nothing in this schema"
    if not isinstance(node, dict | bool):
        return "it points at something that is not a schema"
    return (node,)


def _same_value_edges(node: Any) -> list[str]:
    """Pointers of the schemas that apply to the very value ``node`` applies to."""
    if not isinstance(node, dict):
        return []
    out: list[str] = []
    if isinstance(node.get("$ref"), str):
        out.append(_canonical(node["$ref"]))
    return out


def _left_recursion(nodes: dict[str, Any]) -> str | None:
    """A cycle of references that never descends into the value, as a message."""
    edges: dict[str, list[str]] = {}
    for pointer, node in nodes.items():
        out = _same_value_edges(node)
        if isinstance(node, dict):
            for key in _SAME_VALUE_ONE:
                if isinstance(node.get(key), dict | bool):
                    out.append(f"{pointer}/{key}")
            for key in _SAME_VALUE_LIST:
                if isinstance(node.get(key), list):
                    out.extend(f"{pointer}/{key}/{i}" for i in range(len(node[key])))
            for key in _SAME_VALUE_MAP:
                if isinstance(node.get(key), dict):
                    out.extend(f"{pointer}/{key}/{_escape(name)}" for name in node[key])
        edges[pointer] = [p for p in out if p in nodes]
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in nodes:
        if state.get(start):
            continue
        path, stack = [start], [iter(edges[start])]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                return (
                    "the schema refers to itself without descending into the value "
                    f"({' -> '.join(cycle)}), so checking any value would never end"
                )
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(edges[nxt]))
    return None


def _must(pointer: str, node: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(schemas every conforming value must also meet, somewhere in it; groups of which
    it must meet at least one)."""
    every = _same_value_edges(node)
    every += [f"{pointer}/allOf/{i}" for i in range(len(node.get("allOf") or []))]
    required = node.get("required")
    properties = node.get("properties")
    if isinstance(required, list) and isinstance(properties, dict):
        every += [
            f"{pointer}/properties/{_escape(name)}"
            for name in required
            if isinstance(name, str) and name in properties
        ]
    min_items = node.get("minItems", 0)
    if isinstance(min_items, int) and min_items > 0:
        prefix = node.get("prefixItems")
        items = node.get("items")
        if isinstance(prefix, list):
            every += [f"{pointer}/prefixItems/{i}" for i in range(min(min_items, len(prefix)))]
            if min_items > len(prefix) and isinstance(items, dict | bool):
                every.append(f"{pointer}/items")
        elif isinstance(items, list):
            every += [f"{pointer}/items/{i}" for i in range(min(min_items, len(items)))]
        elif isinstance(items, dict | bool):
            every.append(f"{pointer}/items")
    some = [
        [f"{pointer}/{key}/{i}" for i in range(len(node[key]))]
        for key in ("anyOf", "oneOf")
        if isinstance(node.get(key), list) and node[key]
    ]
    return every, some


def _no_way_out(nodes: dict[str, Any]) -> str | None:
    """The root cannot be met by any finite value, as a message.

    A least fixpoint, as for a grammar's productive symbols, in time linear in the
    schema: a schema is finite once everything it requires is, and one of each of its
    alternatives. Only recursion can make a schema infinite here (`false`, and every
    other constraint, counts as finite: unsatisfiable is not this check's business).
    """
    remaining: dict[str, int] = {}
    needed_by: dict[str, list[tuple[str, int]]] = {}  # dep -> (node, group; -1: every)
    done: list[str] = []
    for pointer, node in nodes.items():
        if not isinstance(node, dict):
            done.append(pointer)
            continue
        every, some = _must(pointer, node)
        deps = {p for p in every if p in nodes}
        groups = [[p for p in group if p in nodes] for group in some]
        remaining[pointer] = len(deps) + len(groups)
        for dep in deps:
            needed_by.setdefault(dep, []).append((pointer, -1))
        for k, group in enumerate(groups):
            for member in group:
                needed_by.setdefault(member, []).append((pointer, k))
        if remaining[pointer] == 0:
            done.append(pointer)
    finite: set[str] = set()
    met_groups: set[tuple[str, int]] = set()
    while done:
        pointer = done.pop()
        if pointer in finite:
            continue
        finite.add(pointer)
        for user, k in needed_by.get(pointer, ()):
            if k >= 0:
                if (user, k) in met_groups:
                    continue
                met_groups.add((user, k))
            remaining[user] -= 1
            if remaining[user] == 0:
                done.append(user)
    if "#" in finite or "#" not in nodes:
        return None
    stuck = sorted(p for p in nodes if p not in finite)
    return (
        "no finite JSON value can meet the schema: each value it requires must contain "
        f"another (at {', '.join(stuck[:4])}{', ...' if len(stuck) > 4 else ''}); "
        "make the recursive part optional (not required, or minItems 0)"
    )
