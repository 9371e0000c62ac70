"""The registry service's operations: one table, read off the :class:`Registry` protocol.

Every protocol method that takes and returns plain values is served generically: a read
as ``GET /v1/<op>?arg=...`` (a ``str`` argument as written, any other as JSON), a write
as ``POST /v1/<op>`` with a JSON object of its arguments. Argument and result types come
from the protocol's own annotations (:mod:`registry.wire`), so the service and its client
cannot drift from the protocol. Methods that move files (push, base/dataset/variant add,
pull), the long-poll watch and ``verify`` have their own routes in :mod:`.app`.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from dataclasses import dataclass
from typing import Any

from registry.errors import BadRequestError
from registry.protocol import Registry
from registry.service.inputs import json_value
from registry.service.tokens import Scope
from registry.wire import WireError, from_wire

#: Served generically; the scope each needs.
READS: tuple[str, ...] = (
    "resolve",
    "adapter",
    "base",
    "dataset",
    "list_adapters",
    "list_bases",
    "list_datasets",
    "aliases",
    "events",
    "change_token",
    "clock",
    "quarantined",
    "rollout",
    "rollouts",
    "variant",
    "variants_of",
    "pair",
    "pairs_of",
    "pairs_on",
)
WRITES: tuple[str, ...] = (
    "set_alias",
    "remove_alias",
    "remove",
    "quarantine",
    "lift_quarantine",
    "start_rollout",
    "claim_rollout",
    "release_rollout",
    "advance_rollout",
    "record_analysis",
    "end_rollout",
    "check_name_free",
    "record_pairs",
    "log_variant_refused",
    "gc",
)
#: Methods with routes of their own, or that never cross the wire.
SPECIAL: frozenset[str] = frozenset(
    {
        "location",
        "read_only",
        "close",
        "push_adapter",
        "push_request",
        "add_base",
        "add_dataset",
        "add_variant",
        "pull",
        "verify",
        "wait_for_change",
    }
)
#: Results that are lists come in pages of at most this many.
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Op:
    """One generic operation: its name, scope, parameters and result type."""

    name: str
    scope: Scope
    params: dict[str, Any]
    required: frozenset[str]
    result: Any

    @property
    def pages(self) -> bool:
        return typing.get_origin(self.result) is list


@functools.cache
def table() -> dict[str, Op]:
    """Every generic operation, by name."""
    ops = {}
    for name, scope in [*((n, "read") for n in READS), *((n, "write") for n in WRITES)]:
        method = getattr(Registry, name)
        hints = typing.get_type_hints(method)
        params = inspect.signature(method).parameters
        names = [p for p in params if p != "self"]
        required = frozenset(p for p in names if params[p].default is inspect.Parameter.empty)
        ops[name] = Op(
            name,
            "read" if scope == "read" else "write",
            {p: hints[p] for p in names},
            required,
            hints["return"],
        )
    return ops


def _is_text(tp: Any) -> bool:
    return tp is str or (set(typing.get_args(tp)) == {str, type(None)})


def query_value(tp: Any, value: Any) -> str:
    """How a client writes one argument of a read into the query string."""
    return value if _is_text(tp) and isinstance(value, str) else json.dumps(value)


def decode_args(op: Op, raw: dict[str, Any], *, from_query: bool) -> dict[str, Any]:
    """The keyword arguments of ``op`` from a query string or a JSON body."""
    unknown = set(raw) - set(op.params)
    if unknown:
        raise BadRequestError(f"{op.name} takes no argument {sorted(unknown)[0]!r}")
    missing = op.required - set(raw)
    if missing:
        raise BadRequestError(f"{op.name} needs the argument {sorted(missing)[0]!r}")
    args = {}
    for name, value in raw.items():
        tp = op.params[name]
        try:
            if from_query and not _is_text(tp):
                value = json_value(value, f"argument {name!r}")
            args[name] = from_wire(tp, value, name)
        except (WireError, ValueError) as exc:
            raise BadRequestError(f"{op.name}: {exc}") from None
    return args
