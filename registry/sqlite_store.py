"""SQLite metadata store (through sqlite-utils): rows in, frozen records out.

One connection per :class:`SqliteStore`, WAL mode, foreign keys on. Reads are short
indexed queries (``resolve`` is two primary-key lookups); writes happen inside
:meth:`SqliteStore.write`, a ``BEGIN IMMEDIATE`` transaction, so concurrent
processes serialize on version allocation under ``UNIQUE(name, version)``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlite_utils import Database

from registry.migrations import migrate
from registry.records import (
    AdapterVersion,
    BaseModel,
    Dataset,
    Event,
    Kind,
    Lineage,
    PeftSummary,
)

_ADAPTER_SELECT = """
SELECT a.*, b.name AS base_name, b.digest AS base_digest,
       d.name AS dataset_name, d.digest AS dataset_digest
FROM adapters a JOIN bases b ON b.id = a.base_id LEFT JOIN datasets d ON d.id = a.dataset_id
"""

Row = dict[str, Any]


class SqliteStore:
    """Metadata of one registry, in ``registry.db``."""

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        conn = sqlite3.connect(path, timeout=busy_timeout_s, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        self.db = Database(conn)
        self.conn = conn
        self.lock = threading.RLock()
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        if self.db.journal_mode != "wal":
            self.db.enable_wal()
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        migrate(self.db)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); commits on success."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None:
        with self.lock:
            row = self.conn.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        with self.lock:
            return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    # -- names and lookups ------------------------------------------------------------
    def kind_of(self, name: str) -> Kind | None:
        row = self.one("SELECT kind FROM names WHERE name = ?", (name,))
        return cast(Kind, row["kind"]) if row else None

    def alias_target(self, name: str, alias: str) -> int | None:
        row = self.one("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias))
        return int(row["version"]) if row else None

    def version_digest(self, name: str, version: int) -> tuple[str, bool] | None:
        """(digest, live) of NAME@N."""
        row = self.one(
            "SELECT digest, removed_at FROM adapters WHERE name = ? AND version = ?",
            (name, version),
        )
        return (row["digest"], row["removed_at"] is None) if row else None

    def live_versions(self, name: str, limit: int = -1) -> list[tuple[int, str]]:
        rows = self.all(
            "SELECT version, digest FROM adapters WHERE name = ? AND removed_at IS NULL "
            "ORDER BY version LIMIT ?",
            (name, limit),
        )
        return [(int(r["version"]), r["digest"]) for r in rows]

    def by_digest(self, digest: str) -> list[tuple[Kind, str, int | None]]:
        """Live records with this content digest: (kind, name, version)."""
        found: list[tuple[Kind, str, int | None]] = []
        for r in self.all(
            "SELECT name, version FROM adapters WHERE digest = ? AND removed_at IS NULL "
            "ORDER BY name, version",
            (digest,),
        ):
            found.append(("adapter", r["name"], int(r["version"])))
        for kind, table in (("base", "bases"), ("dataset", "datasets")):
            for r in self.all(
                f"SELECT name FROM {table} WHERE digest = ? AND removed_at IS NULL ORDER BY name",
                (digest,),
            ):
                found.append((cast(Kind, kind), r["name"], None))
        return found

    def aliases_of(self, name: str) -> dict[str, int]:
        rows = self.all("SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,))
        return {r["alias"]: int(r["version"]) for r in rows}

    # -- records ----------------------------------------------------------------------
    def adapter_row(self, name: str, version: int) -> Row | None:
        return self.one(_ADAPTER_SELECT + "WHERE a.name = ? AND a.version = ?", (name, version))

    def adapter_rows(self, name: str | None = None) -> list[Row]:
        where = "WHERE a.removed_at IS NULL" + (" AND a.name = ?" if name else "")
        return self.all(
            _ADAPTER_SELECT + where + " ORDER BY a.name, a.version", (name,) if name else ()
        )

    def base_row(self, name: str) -> Row | None:
        return self.one("SELECT * FROM bases WHERE name = ?", (name,))

    def base_rows(self) -> list[Row]:
        return self.all("SELECT * FROM bases WHERE removed_at IS NULL ORDER BY name")

    def dataset_row(self, name: str) -> Row | None:
        return self.one("SELECT * FROM datasets WHERE name = ?", (name,))

    def dataset_rows(self) -> list[Row]:
        return self.all("SELECT * FROM datasets WHERE removed_at IS NULL ORDER BY name")

    def manifest_body(self, digest: str) -> str | None:
        row = self.one("SELECT body FROM manifests WHERE digest = ?", (digest,))
        return str(row["body"]) if row else None

    def manifests(self) -> list[tuple[str, str]]:
        return [(r["digest"], r["body"]) for r in self.all("SELECT digest, body FROM manifests")]

    def events(self, name: str | None = None) -> list[Event]:
        if name is None:
            rows = self.all("SELECT * FROM events ORDER BY id")
        else:
            rows = self.all("SELECT * FROM events WHERE name = ? ORDER BY id", (name,))
        return [
            Event(
                id=r["id"],
                at=r["at"],
                who=r["who"],
                action=r["action"],
                name=r["name"],
                version=r["version"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]

    def change_token(self) -> int:
        row = self.one("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(row["seq"]) if row else 0


def now_iso() -> str:
    """UTC now as ISO 8601 with milliseconds and a ``Z`` (the registry's timestamps)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def add_event(
    conn: sqlite3.Connection,
    *,
    at: str,
    who: str,
    action: str,
    name: str,
    version: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append to the event log (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO events (at, who, action, name, version, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (at, who, action, name, version, json.dumps(detail or {}, sort_keys=True)),
    )


def move_alias(
    conn: sqlite3.Connection, *, name: str, alias: str, version: int, who: str, at: str
) -> None:
    """Point ``name@alias`` at ``version`` and log it (no-op if it already does)."""
    row = conn.execute(
        "SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)
    ).fetchone()
    old = int(row[0]) if row else None
    if old == version:
        return
    conn.execute(
        "INSERT INTO aliases (name, alias, version, updated_by, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version,"
        " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        (name, alias, version, who, at),
    )
    add_event(
        conn,
        at=at,
        who=who,
        action="alias.set",
        name=name,
        version=version,
        detail={"alias": alias, "from": old, "to": version},
    )


def adapter_from_row(row: Row, aliases: tuple[str, ...]) -> AdapterVersion:
    schema = json.loads(row["schema"]) if row["schema"] else None
    return AdapterVersion(
        name=row["name"],
        version=int(row["version"]),
        digest=row["digest"],
        base_model=Lineage(row["base_name"], row["base_digest"]),
        dataset=Lineage(row["dataset_name"], row["dataset_digest"]),
        peft=PeftSummary(
            r=int(row["r"]),
            lora_alpha=float(row["lora_alpha"]),
            target_modules=tuple(json.loads(row["target_modules"])),
            lora_dropout=float(row["lora_dropout"]),
        ),
        schema=schema,
        aliases=aliases,
        meta=json.loads(row["meta"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        chat_template_digest=row["chat_template_digest"],
        removed_at=row["removed_at"],
    )


def base_from_row(row: Row, parent: str | None) -> BaseModel:
    return BaseModel(
        name=row["name"],
        digest=row["digest"],
        architecture=json.loads(row["architecture"]),
        license=row["license"],
        parent=parent,
        quantization=row["quantization"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        chat_template_digest=row["chat_template_digest"],
    )


def dataset_from_row(row: Row) -> Dataset:
    return Dataset(
        name=row["name"],
        digest=row["digest"],
        records=int(row["records"]),
        size=int(row["size"]),
        license=row["license"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )
