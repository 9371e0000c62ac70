"""Migrations: a registry written by the previous schema keeps serving what it served."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import registry
from registry.local import LocalRegistry
from registry.location import open_local
from registry.migrations import MIGRATIONS
from tests.registry.conftest import ON_A_DIRECTORY


def _as_schema_1(path: Path) -> None:
    """Undo migrations 2-5 by hand: no production aliases, no code columns, no rollouts,
    no variants, no quarantine columns."""
    conn = sqlite3.connect(path / "registry.db")
    with conn:
        for column in ("quarantine_reason", "quarantined_by", "quarantined_at"):  # migration 5
            conn.execute(f"ALTER TABLE adapters DROP COLUMN {column}")
        conn.execute("DROP TABLE pair_evals")  # migration 4
        conn.execute("DROP TABLE variants")
        conn.execute("DROP TABLE rollout_analyses")  # migration 3 and later
        conn.execute("DROP TABLE rollouts")
        conn.execute("DELETE FROM aliases")
        conn.execute("ALTER TABLE adapters DROP COLUMN code_commit")
        conn.execute("ALTER TABLE adapters DROP COLUMN code_dirty")
        conn.execute("PRAGMA user_version = 1")
    conn.close()


@ON_A_DIRECTORY
def test_plain_name_keeps_serving_the_only_version(
    reg: LocalRegistry, reg_path: Path, make_adapter: Callable[..., Path]
) -> None:
    reg.push_adapter(make_adapter("solo"), dataset="support-data")
    reg.push_adapter(make_adapter("duo"), dataset="support-data")
    reg.push_adapter(make_adapter("duo", seed=1), dataset="support-data")
    reg.close()
    _as_schema_1(reg_path)
    with open_local(reg_path, create=False) as migrated:
        assert migrated.store.schema_version() == len(MIGRATIONS)
        assert migrated.resolve("solo").version == 1  # was "the only live version"
        assert migrated.aliases("solo") == {"production": 1}
        assert migrated.events("solo")[-1].who == "migration"
        with pytest.raises(registry.RefNotFoundError, match="alias set duo production"):
            migrated.resolve("duo")  # was ambiguous before; still names no version
        assert migrated.adapter("solo@1").code is None


@ON_A_DIRECTORY
def test_a_newer_schema_is_refused(reg: LocalRegistry, reg_path: Path) -> None:
    reg.close()
    conn = sqlite3.connect(reg_path / "registry.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(registry.SchemaVersionError, match="upgrade loraport"):
        registry.open(reg_path)


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    conn = sqlite3.connect(tmp_path / "other" / "registry.db")
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.close()
    with pytest.raises(registry.NotARegistryError, match="something else"):
        registry.open(tmp_path / "other")
