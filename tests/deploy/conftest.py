"""Registries holding one adapter name with several versions, for rollouts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import registry
from registry.local import LocalRegistry
from registry.location import open_local
from tests.support.synthetic import write_adapter, write_base


@pytest.fixture
def support_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A synthetic base and ``support`` versions 1 (production), 2 and 3."""
    location = tmp_path / "reg"
    settings = registry.RegistrySettings(user="tester")
    with open_local(location, settings=settings) as reg:
        reg.add_base(write_base(tmp_path / "tiny-base"), name="tiny-base")
        for seed in range(3):
            reg.push_adapter(
                write_adapter(tmp_path / f"a{seed}" / "support", seed=seed),
                allow_unknown_dataset=True,
            )
        yield reg
