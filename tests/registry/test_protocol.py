"""The `Registry` protocol is the whole registry: LocalRegistry and HttpRegistry (the
registry service's client) each offer exactly its operations, with the same parameters,
so either stands in anywhere; and callers outside the registry never import an
implementation module."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.http_client import HttpRegistry
from registry.local import LocalRegistry
from registry.protocol import Registry
from tests.support.imports import imported_names

ROOT = Path(__file__).resolve().parents[2]
DUNDERS = {"__enter__", "__exit__"}
#: What callers may not import: they type against the protocol and open with registry.open.
IMPLEMENTATION = {
    "registry.local",
    "registry.location",
    "registry.server_location",
    "registry.deps",
    "registry.sql_store",
    "registry.push",
    "registry.catalog",
    "registry.rollouts",
    "registry.transfer",
    "registry.variants",
}


def operations(cls: type) -> set[str]:
    """Public methods and properties defined on ``cls`` or its bases (not ``object``)."""
    names = set()
    for klass in cls.__mro__:
        if klass is object or klass.__module__ == "typing":
            continue
        names |= {n for n in vars(klass) if not n.startswith("_") or n in DUNDERS}
    return names


IMPLEMENTATIONS = [LocalRegistry, HttpRegistry]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_each_implementation_offers_exactly_the_protocol(impl: type) -> None:
    assert operations(impl) == operations(Registry)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", sorted(operations(Registry)))
def test_each_operation_takes_the_protocols_parameters(impl: type, name: str) -> None:
    ours, theirs = getattr(impl, name), getattr(Registry, name)
    if isinstance(theirs, property):
        assert isinstance(ours, property)
        return

    def shape(fn: Callable[..., object]) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert shape(ours) == shape(theirs)


def test_variant_operations_are_on_the_protocol() -> None:
    """Quantize and the gateway reach variants and pair results through the protocol."""
    assert {
        "check_name_free",
        "add_variant",
        "record_pairs",
        "log_variant_refused",
        "variant",
        "variants_of",
        "pair",
        "pairs_of",
        "pairs_on",
    } <= operations(Registry)


@pytest.mark.parametrize("package", ["server", "quantize", "deploy"])
def test_callers_import_no_implementation_module(package: str) -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in imported_names(path)
        if any(module == m or module.startswith(m + ".") for m in IMPLEMENTATION)
    }
    assert not offenders
