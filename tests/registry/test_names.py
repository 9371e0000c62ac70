"""The one namespace: which names a new record may take, decided once."""

from __future__ import annotations

from pathlib import Path

import pytest

import registry
from registry.local import LocalRegistry
from registry.names import name_refusal
from registry.records import Kind


@pytest.mark.parametrize(
    ("existing", "wanted", "refused"),
    [
        (None, "adapter", False),  # a new name
        (None, None, False),  # a new name, for a variant
        ("adapter", "adapter", False),  # a new version
        ("base", "base", False),  # the same base again (its content decides)
        ("dataset", "dataset", False),
        ("adapter", "base", True),
        ("base", "adapter", True),
        ("dataset", "adapter", True),
        ("base", "dataset", True),
        ("base", None, True),  # a variant never adds to an existing base
        ("adapter", None, True),
    ],
)
def test_name_refusal(existing: Kind | None, wanted: Kind | None, refused: bool) -> None:
    found = name_refusal("support", existing, wanted)
    assert (found is not None) is refused
    if found is not None:
        assert isinstance(found, registry.NameConflictError)
        assert "'support' is taken" in str(found) and "--name NAME" in str(found)


def test_every_write_refuses_a_taken_name_with_one_message(
    reg: LocalRegistry, make_adapter, base_dir: Path, dataset_file: Path
) -> None:
    """Push, base add, dataset add and a variant's early check say what the rule says."""
    reg.push_adapter(make_adapter("support"), dataset="support-data")
    token = reg.change_token()
    attempts = [
        (lambda: reg.add_base(base_dir, name="support"), "support", "adapter", "base"),
        (lambda: reg.add_dataset(dataset_file, name="support"), "support", "adapter", "dataset"),
        (lambda: reg.check_name_free("support"), "support", "adapter", None),
        (
            lambda: reg.push_adapter(make_adapter("tiny-base"), dataset="support-data"),
            "tiny-base",
            "base",
            "adapter",
        ),
    ]
    for attempt, name, existing, wanted in attempts:
        with pytest.raises(registry.NameConflictError) as info:
            attempt()
        assert str(info.value) == str(name_refusal(name, existing, wanted))
    assert reg.change_token() == token
