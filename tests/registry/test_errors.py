"""Every registry exception maps to exactly one CLI exit code."""

from __future__ import annotations

import inspect

from registry import errors
from registry.cli import EXIT_CODES, exit_code


def _all_errors() -> set[type[errors.RegistryError]]:
    return {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.RegistryError)
    }


def test_mapping_is_complete_and_exact() -> None:
    assert set(EXIT_CODES) == _all_errors()
    codes = list(EXIT_CODES.values())
    assert len(codes) == len(set(codes)), "two exceptions share an exit code"
    assert all(code not in (0, 2) for code in codes), "0 is success, 2 is a usage error"


def test_most_specific_class_wins() -> None:
    assert exit_code(errors.AliasInUseError("x")) == EXIT_CODES[errors.AliasInUseError]
    reason = errors.AdapterProblem.EMPTY
    assert exit_code(errors.InvalidAdapterError(reason, "x")) == 6


def test_tree_is_documented() -> None:
    doc = errors.__doc__ or ""
    for cls in _all_errors():
        assert cls.__name__ in doc, f"{cls.__name__} missing from the tree in errors.py"
