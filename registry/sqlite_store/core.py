"""The store's connection: opening (and refusing), migrating, transactions, the event log.

One connection per store (through sqlite-utils for migrations), WAL mode, foreign keys
on. Reads are short indexed queries run under the store's lock. Writes happen inside
``SqliteStore.write``, a ``BEGIN IMMEDIATE`` transaction, so concurrent processes
serialize on version allocation under ``UNIQUE(name, version)``; SQLite's own failures
come out as the registry's typed errors.

Opening never guesses: a missing database is created only when asked (``create``), a
file that is not SQLite or a database that is not a registry is refused with
:class:`NotARegistryError`, and a database this process cannot write is opened
read-only (reads work; every write raises :class:`ReadOnlyRegistryError`). On a
read-only mount a WAL database whose ``-shm`` file cannot be created is opened
``immutable``: correct for a mount nobody writes through, which is what read-only means.
The schema's DDL lives in :mod:`registry.migrations`, next to its history.

Every write appends to the event log (``TxCore.event``), and the log's last id is the
change token gateways poll, so the log lives here, under every record kind.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

from sqlite_utils import Database

from registry.errors import (
    NotARegistryError,
    ReadOnlyRegistryError,
    SchemaVersionError,
    StorageFullError,
    VersionConflictError,
)
from registry.migrations import MIGRATIONS, migrate
from registry.records import Event

if TYPE_CHECKING:
    from registry.sqlite_store import SqliteStore

_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUR_TABLES = {"names", "manifests", "bases", "datasets", "adapters", "aliases", "events"}
# sqlite3 primary result codes (the low byte of ``sqlite_errorcode``).
_SQLITE_READONLY = 8
_SQLITE_FULL = 13
_SQLITE_CONSTRAINT = 19

Row = dict[str, Any]
#: Free bytes under which a failure to open the database is put down to a full disk.
_FULL_BELOW_BYTES = 1 << 20


def _disk_full(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL_BELOW_BYTES


def now_iso() -> str:
    """UTC now as ISO 8601 with milliseconds and a ``Z`` (the registry's timestamps)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _primary_code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _connect(path: Path, busy_timeout_s: float, mode: str) -> sqlite3.Connection:
    """``mode``: ``rwc`` (may create), ``rw``, ``ro`` or ``immutable``."""
    uri = f"file:{quote(str(path.absolute()))}"
    uri += "?immutable=1" if mode == "immutable" else f"?mode={mode}"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows} - {"sqlite_sequence"}


class StoreCore:
    """One open ``registry.db``: its connection, lock and query primitives."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
        self.conn = conn
        self.path = path
        self.read_only = read_only
        self.db = Database(conn)
        self.lock = threading.RLock()
        #: Opened read-only because the disk under it is full (writes: StorageFullError).
        self.full = False

    @classmethod
    def open(
        cls, path: Path, *, busy_timeout_s: float, create: bool, read_only: bool | None
    ) -> Self:
        """Open ``path`` (see the module docstring for what is refused and why)."""
        exists = path.exists()
        if exists:
            with open(path, "rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
            if head and head != _SQLITE_MAGIC:
                raise NotARegistryError(
                    f"{path} is not a SQLite database, so this is not a registry; point "
                    "--registry at a registry directory (or move the file away)"
                )
        if read_only is None:
            read_only = not os.access(path.parent, os.W_OK) or (
                exists and not os.access(path, os.W_OK)
            )
        if not exists and (read_only or not create):
            raise NotARegistryError(f"no registry database at {path}")
        try:
            return cls._open(path, busy_timeout_s, exists=exists, read_only=read_only)
        except sqlite3.DatabaseError as exc:
            if exists and not read_only and _disk_full(path.parent):
                # SQLite cannot even start its write-ahead log: serve reads, refuse writes.
                store = cls._open(path, busy_timeout_s, exists=True, read_only=True)
                store.full = True
                return store
            raise NotARegistryError(
                f"{path} cannot be read as a registry database: {exc}"
            ) from None

    @classmethod
    def _open(cls, path: Path, busy_timeout_s: float, *, exists: bool, read_only: bool) -> Self:
        if not read_only:
            conn = _connect(path, busy_timeout_s, "rw" if exists else "rwc")
        else:
            conn = _connect(path, busy_timeout_s, "ro")
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                conn.close()  # WAL database, no -shm file, and none can be created here
                conn = _connect(path, busy_timeout_s, "immutable")
        try:
            store = cls(conn, path, read_only=read_only)
            store._prepare()
        except BaseException:
            conn.close()
            raise
        return store

    def _prepare(self) -> None:
        conn = self.conn
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = _tables(conn)
        if current == 0 and tables:
            raise NotARegistryError(
                f"{self.path} is a SQLite database of something else (tables: "
                f"{', '.join(sorted(tables)[:5])}), not a registry"
            )
        if current > 0 and not tables >= _OUR_TABLES:
            raise NotARegistryError(f"{self.path} lacks the registry's tables; it is damaged")
        if current > len(MIGRATIONS):
            raise SchemaVersionError(
                f"{self.path} was written by a newer loraport (schema {current}; this one "
                f"knows {len(MIGRATIONS)}); upgrade loraport"
            )
        if current < len(MIGRATIONS) and self.read_only:
            raise SchemaVersionError(
                f"{self.path} has schema {current} and this loraport needs "
                f"{len(MIGRATIONS)}; open it once with write access "
                f"(`registry init --registry {self.path.parent}`) to migrate it"
            )
        if not self.read_only:
            if self.db.journal_mode != "wal":
                self.db.enable_wal()
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
            migrate(self.db)

    def close(self) -> None:
        # Under the lock: a watch thread may be inside a query on this connection, and
        # sqlite3 closing a connection another thread is using can crash the process.
        with self.lock:
            self.conn.close()

    def check_writable(self) -> None:
        """Raise ReadOnlyRegistryError when this store was opened read-only."""
        if self.full:
            raise StorageFullError(
                f"the registry's storage at {self.path.parent} is full; nothing was "
                "recorded. Free space there and run the command again (reads still work)"
            )
        if self.read_only:
            raise ReadOnlyRegistryError(
                f"the registry at {self.path.parent} is open read-only (this process cannot "
                "write there); run writes where the registry's directory is writable"
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error), SQLite's failures
        turned into typed errors. :meth:`SqliteStore.write` wraps it and hands out a Tx."""
        self.check_writable()
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self.conn.execute("COMMIT")
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                code = _primary_code(exc)
                if code == _SQLITE_READONLY:
                    raise ReadOnlyRegistryError(
                        f"the registry at {self.path.parent} is read-only here ({exc}); "
                        "run writes where its directory is writable"
                    ) from None
                if code == _SQLITE_FULL:
                    raise StorageFullError(
                        f"the registry's storage at {self.path.parent} is full ({exc}); "
                        "nothing was recorded. Free space there and run the command again"
                    ) from None
                if code == _SQLITE_CONSTRAINT and "adapters.version" in str(exc):
                    raise VersionConflictError(
                        "another writer took this version number at the same moment; "
                        "push again (nothing was recorded)"
                    ) from None
                raise

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None:
        with self.lock:
            row = self.conn.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        with self.lock:
            return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    def schema_version(self) -> int:
        row = self.one("PRAGMA user_version")
        return int(row["user_version"]) if row else 0

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
        row = self.one("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(row["seq"]) if row else 0


class TxCore:
    """What every write of one transaction has: the store, its connection, the log."""

    def __init__(self, store: SqliteStore) -> None:
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
