"""The store turns SQLite's own failures into the registry's typed errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import registry
from registry.local import LocalRegistry
from registry.protocol import Registry
from tests.registry.conftest import reopen


def test_a_taken_version_number_is_a_version_conflict(
    local_reg: LocalRegistry, make_adapter: Callable[..., Path]
) -> None:
    reg = local_reg
    """What a writer that lost a race for NAME@N meets (UNIQUE(name, version))."""
    v1 = reg.push_adapter(make_adapter(), dataset="support-data").adapter
    token = reg.change_token()
    with pytest.raises(registry.VersionConflictError, match="push again"), reg.store.write() as tx:
        tx.conn.execute(
            "INSERT INTO adapters (name, version, digest, base_id, dataset_unknown, r,"
            " lora_alpha, target_modules, lora_dropout, peft_config, identity, meta,"
            " created_by, created_at) SELECT name, version, digest, base_id, 1, r, lora_alpha,"
            " target_modules, lora_dropout, peft_config, 'other', meta, created_by, created_at"
            " FROM adapters WHERE name = ? AND version = ?",
            (v1.name, v1.version),
        )
    assert reg.change_token() == token and len(reg.list_adapters()) == 1


def test_writes_on_a_read_only_store_refuse_before_any_work(
    reg: Registry,
    backing_reg: LocalRegistry,
    settings: registry.RegistrySettings,
    make_adapter: Callable[..., Path],
) -> None:
    reg.close()
    with reopen(backing_reg, settings, read_only=True) as ro:
        assert ro.read_only and ro.list_bases()[0].name == "tiny-base"
        with pytest.raises(registry.ReadOnlyRegistryError, match="read-only"):
            ro.push_adapter(make_adapter(), dataset="support-data")
        with pytest.raises(registry.ReadOnlyRegistryError):
            ro.remove("support-data")
