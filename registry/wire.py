"""Records to JSON and back, for the registry service: one codec for every record type.

:func:`to_wire` turns frozen dataclasses (and the tuples, dicts and digests inside them)
into plain JSON values; :func:`from_wire` rebuilds a value of a given type from them,
reading the dataclasses' own type hints, so a new field needs no code here. A value that
does not fit its type is a :class:`WireError` (the service answers 400; a client that
gets one from a server has met a server of another version).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import json
import types
import typing
from typing import Any, Literal, Union

from registry.digest import Digest
from registry.errors import InvalidRefError

#: The largest whole number on the wire: a signed 64-bit integer, as SQLite stores.
MAX_INT = 2**63 - 1


class WireError(ValueError):
    """A JSON value does not fit the type it should be read as."""


def to_wire(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (dataclasses become objects, tuples lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, str):
        return str(value)  # a Digest is a str
    return value


def dumps(value: Any) -> bytes:
    """The JSON text of a wire value, both ways (requests and results). NaN and the
    infinities stay (written as Python's JSON writes them, read back by its loads): a
    record may hold them (free-form metadata, fidelity figures) and a directory returns
    them as they are, and a write's own checks, not the codec, refuse them where they are
    not allowed (a rollout's steps and plan)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_wire(tp: Any, data: Any, where: str = "value") -> Any:
    """``data`` read as type ``tp``; raise WireError when it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if data is None and type(None) in options:
            return None
        problems = []
        for option in options:
            if option is type(None):
                continue
            try:
                return from_wire(option, data, where)
            except (WireError, ValueError) as exc:
                problems.append(str(exc))
        raise WireError(f"{where}: fits none of {tp} ({'; '.join(problems)})")
    if origin is Literal:
        if data not in typing.get_args(tp):
            raise WireError(f"{where}: {data!r} is not one of {typing.get_args(tp)}")
        return data
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(data, list):
            raise WireError(f"{where}: expected a list, got {type(data).__name__}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [from_wire(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(data, dict):
            raise WireError(f"{where}: expected an object, got {type(data).__name__}")
        _, value_type = typing.get_args(tp) or (str, Any)
        return {str(k): from_wire(value_type, v, f"{where}.{k}") for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, data, where)
    return _scalar(tp, data, where)


def _dataclass(tp: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise WireError(f"{where}: expected an object, got {type(data).__name__}")
    hints = _hints(tp)
    fields = {f.name: f for f in dataclasses.fields(tp)}
    unknown = set(data) - set(fields)
    if unknown:
        raise WireError(f"{where}: unknown fields {sorted(unknown)}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = from_wire(hints[name], data[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise WireError(f"{where}: missing field {name!r}")
    return tp(**kwargs)


def _scalar(tp: Any, data: Any, where: str) -> Any:
    if tp is Digest:
        if not isinstance(data, str):
            raise WireError(f"{where}: expected a digest string")
        try:
            return Digest(data)
        except InvalidRefError as exc:
            raise WireError(f"{where}: {exc}") from None
    if tp is bool:
        if not isinstance(data, bool):
            raise WireError(f"{where}: expected true or false")
        return data
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise WireError(f"{where}: expected an integer")
        if not -MAX_INT - 1 <= data <= MAX_INT:  # what SQLite (and every peer) can hold
            raise WireError(f"{where}: {data} is out of range")
        return data
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise WireError(f"{where}: expected a number")
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            raise WireError(f"{where}: expected a string")
        return data
    if tp is type(None):
        if data is not None:
            raise WireError(f"{where}: expected null")
        return None
    raise WireError(f"{where}: cannot read type {tp!r} from the wire")
