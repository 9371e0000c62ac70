"""The CPU pin_memory shim for AWQ: on only where it is needed, off past the checked
release (the worker module imports nothing but the standard library at the top, so the
main environment can test its pure parts)."""

from __future__ import annotations

import pytest

from quantize.worker import pin_memory_shim_needed


@pytest.mark.parametrize(
    ("version", "accelerator", "needed"),
    [
        ("0.14.0.1", False, True),
        ("0.14.0", False, True),
        ("0.13.2", False, True),
        ("0.14.0.1", True, False),  # a GPU: pinning works, nothing to patch
        ("0.14.1", False, False),  # a newer release runs unpatched
        ("0.15.0", False, False),
        ("1.0.0+cpu", False, False),
    ],
)
def test_shim_version_check(version: str, accelerator: bool, needed: bool) -> None:
    assert pin_memory_shim_needed(version, accelerator) is needed
