"""The store's core over one :class:`Connection`: opening (and refusing), migrating,
transactions, the event log and change token, the clock.

The connection (:mod:`.sqlite` or :mod:`.postgres`) hides the dialect; everything here is
the same for both. Reads are short indexed queries run under the store's lock. Writes
happen inside ``SqlStore.write``: the connection's serialised write transaction, so
concurrent writers (processes, or servers sharing a database) take version numbers one
at a time under ``UNIQUE(name, version)``, and the database's failures come out as the
registry's typed errors.

Opening never guesses: a database that is not a registry is refused with
:class:`NotARegistryError`, one written by a newer loraport with
:class:`SchemaVersionError`; an older one is migrated (never when read-only). The
schema's DDL lives in :mod:`registry.migrations`, next to its history.

Every write appends to the event log (``TxCore.event``), and the log's last id is the
change token gateways poll, so the log lives here, under every record kind. Writers are
serialised, so ids are taken in commit order and the token never skips a commit.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from registry.errors import (
    NotARegistryError,
    ReadOnlyRegistryError,
    SchemaVersionError,
    StorageFullError,
)
from registry.migrations import MIGRATIONS, migrate
from registry.records import Event
from registry.sql_store.connection import Connection
from registry.sql_store.sqlite import SqliteConnection, open_sqlite

if TYPE_CHECKING:
    from registry.sql_store import SqlStore

_OUR_TABLES = {"names", "manifests", "bases", "datasets", "adapters", "aliases", "events"}

Row = dict[str, Any]


def now_iso() -> str:
    """UTC now as ISO 8601 with milliseconds and a ``Z`` (the registry's timestamps)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_schema(conn: Connection, *, read_only: bool, migrate_hint: str) -> None:
    """Refuse a database that is not a registry, a damaged one, one newer than this
    loraport, or one that needs migrating where it cannot be written."""
    where = conn.where
    current = conn.user_version()
    tables = conn.tables()
    if current == 0 and tables:
        raise NotARegistryError(
            f"{where} is a database of something else (tables: "
            f"{', '.join(sorted(tables)[:5])}), not a registry"
        )
    if current > 0 and not tables >= _OUR_TABLES:
        raise NotARegistryError(f"{where} lacks the registry's tables; it is damaged")
    if current > len(MIGRATIONS):
        raise SchemaVersionError(
            f"{where} was written by a newer loraport (schema {current}; this one "
            f"knows {len(MIGRATIONS)}); upgrade loraport"
        )
    if current < len(MIGRATIONS) and read_only:
        raise SchemaVersionError(
            f"{where} has schema {current} and this loraport needs "
            f"{len(MIGRATIONS)}; open it once with write access ({migrate_hint}) to migrate it"
        )


class StoreCore:
    """One open registry database: its connection, lock and query primitives."""

    def __init__(self, conn: Connection, *, read_only: bool, full: bool = False) -> None:
        self.conn = conn
        self.read_only = read_only
        self.lock = threading.RLock()
        #: Opened read-only because the disk under it is full (writes: StorageFullError).
        self.full = full

    @property
    def where(self) -> str:
        """The database, as messages name it (a path, or a database on a host)."""
        return self.conn.where

    @classmethod
    def open(
        cls, path: Path, *, busy_timeout_s: float, create: bool, read_only: bool | None
    ) -> Self:
        """Open the SQLite database ``path`` (refusals: :mod:`registry.sql_store.sqlite`)."""
        hint = f"`registry init --registry {path.parent}`"

        def check(conn: SqliteConnection, read_only: bool) -> None:
            check_schema(conn, read_only=read_only, migrate_hint=hint)

        opened = open_sqlite(
            path, busy_timeout_s=busy_timeout_s, create=create, read_only=read_only, check=check
        )
        try:
            if not opened.read_only:
                migrate(opened.conn)
        except BaseException:
            opened.conn.close()
            raise
        return cls(opened.conn, read_only=opened.read_only, full=opened.full)

    @classmethod
    def over(cls, conn: Connection, *, create: bool, read_only: bool, init_hint: str) -> Self:
        """A store over an open server database (PostgreSQL): refused unless it holds a
        registry, or is empty and ``create``; migrated to this loraport's schema unless
        ``read_only``."""
        try:
            check_schema(conn, read_only=read_only, migrate_hint=init_hint)
            if conn.user_version() == 0 and (read_only or not create):
                raise NotARegistryError(
                    f"{conn.where} holds no registry; check the URL, or create one with {init_hint}"
                )
            if not read_only:
                migrate(conn)
        except BaseException:
            conn.close()
            raise
        return cls(conn, read_only=read_only)

    def close(self) -> None:
        # Under the lock: a watch thread may be inside a query on this connection, and
        # closing a connection another thread is using can crash the process (sqlite3).
        with self.lock:
            self.conn.close()

    def check_writable(self) -> None:
        """Raise ReadOnlyRegistryError when this store was opened read-only."""
        if self.full:
            raise StorageFullError(
                f"the registry's storage at {self.where} is full; nothing was "
                "recorded. Free space there and run the command again (reads still work)"
            )
        if self.read_only:
            raise ReadOnlyRegistryError(
                f"the registry at {self.where} is open read-only in this process; run "
                "writes from one that opens it writable (for a directory: where its files "
                "are writable)"
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """The connection's serialised write transaction (rolled back on any error, the
        database's failures typed). :meth:`SqlStore.write` wraps it and hands out a Tx."""
        self.check_writable()
        with self.lock, self.conn.write_transaction():
            yield

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None:
        with self.lock:
            row = self.conn.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        with self.lock:
            return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    def schema_version(self) -> int:
        with self.lock:
            return self.conn.user_version()

    def clock(self) -> float:
        """The registry's clock (epoch seconds): what leases are written and compared on."""
        with self.lock:
            return self.conn.clock()

    # -- the event log ----------------------------------------------------------------
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
        row = self.one("SELECT COALESCE(MAX(id), 0) AS seq FROM events")
        return int(row["seq"]) if row else 0


class TxCore:
    """What every write of one transaction has: the store, its connection, the log."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.conn = store.conn

    def event(
        self,
        *,
        at: str,
        who: str,
        action: str,
        name: str,
        version: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append to the event log."""
        self.conn.execute(
            "INSERT INTO events (at, who, action, name, version, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (at, who, action, name, version, json.dumps(detail or {}, sort_keys=True)),
        )
