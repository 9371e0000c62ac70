"""The error table: every registry exception carries exactly one exit code, HTTP status
and wire code, and the table in errors.py's docstring says the same thing."""

from __future__ import annotations

import inspect
import re

import pytest

from registry import errors
from registry.commands.options import exit_code


def _all_errors() -> set[type[errors.RegistryError]]:
    return {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.RegistryError)
    }


def test_every_class_carries_its_own_outcome() -> None:
    for cls in _all_errors():
        for attribute in ("exit_code", "http_status", "code"):
            assert attribute in vars(cls), f"{cls.__name__} inherits {attribute}"
        assert cls.exit_code not in (0, 2), "0 is success, 2 is a usage error"
        assert 400 <= cls.http_status <= 599
        assert re.fullmatch(r"[a-z_]+", cls.code)


def test_the_table_is_complete_and_unambiguous() -> None:
    classes = _all_errors()
    assert set(errors.error_classes()) == classes
    assert len({c.exit_code for c in classes}) == len(classes), "two classes share an exit code"
    assert len({c.code for c in classes}) == len(classes), "two classes share a wire code"
    for cls in classes:
        assert errors.error_class(cls.code) is cls  # an HTTP client can raise it again
    assert errors.error_class("no_such_code") is errors.RegistryError


def test_exit_code_is_the_class_attribute() -> None:
    assert exit_code(errors.AliasInUseError("x")) == 11
    reason = errors.AdapterProblem.EMPTY
    assert exit_code(errors.InvalidAdapterError(reason, "x")) == 6


@pytest.mark.parametrize("cls", sorted(_all_errors(), key=lambda c: c.exit_code))
def test_docstring_table_matches(cls: type[errors.RegistryError]) -> None:
    doc = errors.__doc__ or ""
    row = re.search(rf"\b{cls.__name__}\s+(\d+)\s+(\d+)\s+(\w+)", doc)
    assert row is not None, f"{cls.__name__} missing from the table in errors.py"
    assert (int(row[1]), int(row[2]), row[3]) == (cls.exit_code, cls.http_status, cls.code)


def test_nothing_raises_the_bare_base_class() -> None:
    import pathlib

    root = pathlib.Path(errors.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"raise (?:e\.|errors\.)?RegistryError\(", text), path.name


def test_docs_list_every_error_with_its_numbers() -> None:
    import pathlib

    docs = (pathlib.Path(errors.__file__).parent.parent / "docs" / "registry.md").read_text()
    for cls in _all_errors() - {errors.RegistryError}:
        row = f"| {cls.exit_code} | {cls.http_status} | `{cls.__name__}` |"
        assert row in docs, f"docs/registry.md lacks the row for {cls.__name__}"
