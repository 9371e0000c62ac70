"""The store on SQLite: one ``registry.db`` file, one connection, WAL mode, foreign keys on.

Opening never guesses: a missing database is created only when asked (``create``), a
file that is not SQLite is refused with :class:`NotARegistryError`, and a database this
process cannot write is opened read-only (reads work; every write raises
:class:`ReadOnlyRegistryError`). On a read-only mount a WAL database whose ``-shm`` file
cannot be created is opened ``immutable``: correct for a mount nobody writes through,
which is what read-only means. A database that cannot even start its write-ahead log
because the disk is full is opened read-only and marked full (writes:
:class:`StorageFullError`).

Writes run inside ``BEGIN IMMEDIATE``, so concurrent processes serialize on version
allocation under ``UNIQUE(name, version)``; SQLite's own failures come out as the
registry's typed errors.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from registry.errors import (
    NotARegistryError,
    ReadOnlyRegistryError,
    StorageFullError,
    VersionConflictError,
)
from registry.sql_store.connection import Cursor

_SQLITE_MAGIC = b"SQLite format 3\x00"
# sqlite3 primary result codes (the low byte of ``sqlite_errorcode``).
_SQLITE_READONLY = 8
_SQLITE_FULL = 13
_SQLITE_CONSTRAINT = 19
#: Free bytes under which a failure to open the database is put down to a full disk.
_FULL_BELOW_BYTES = 1 << 20


def _disk_full(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL_BELOW_BYTES


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


class SqliteConnection:
    """A :class:`registry.sql_store.connection.Connection` on a ``registry.db`` file."""

    dialect = "sqlite"

    def __init__(self, raw: sqlite3.Connection, path: Path) -> None:
        self.raw = raw
        self.path = path
        self.where = str(path)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.raw.execute(sql, tuple(params))

    def ddl(self, statement: str) -> None:
        self.raw.execute(statement)

    def forbid_changes(self, table: str, message: str) -> None:
        for verb in ("update", "delete"):
            self.raw.execute(
                f"CREATE TRIGGER {table}_append_only_{verb} BEFORE {verb.upper()} ON {table}"
                f"\n        BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )

    def tables(self) -> set[str]:
        rows = self.raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(r[0]) for r in rows.fetchall()} - {"sqlite_sequence"}

    def user_version(self) -> int:
        return int(self.raw.execute("PRAGMA user_version").fetchone()[0])

    def set_user_version(self, version: int) -> None:
        self.raw.execute(f"PRAGMA user_version = {int(version)}")

    def clock(self) -> float:
        """This host's clock: every writer of a SQLite registry shares the host."""
        return time.time()

    def close(self) -> None:
        self.raw.close()

    def prepare_for_writes(self) -> None:
        if str(self.raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            self.raw.execute("PRAGMA journal_mode = wal")
        self.raw.execute("PRAGMA foreign_keys = ON")
        self.raw.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def write_transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error), SQLite's failures
        turned into typed errors."""
        directory = self.path.parent
        try:
            self.raw.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.raw.execute("COMMIT")
            except BaseException:
                if self.raw.in_transaction:
                    self.raw.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            code = _primary_code(exc)
            if code == _SQLITE_READONLY:
                raise ReadOnlyRegistryError(
                    f"the registry at {directory} is read-only here ({exc}); "
                    "run writes where its directory is writable"
                ) from None
            if code == _SQLITE_FULL:
                raise StorageFullError(
                    f"the registry's storage at {directory} is full ({exc}); "
                    "nothing was recorded. Free space there and run the command again"
                ) from None
            if code == _SQLITE_CONSTRAINT and "adapters.version" in str(exc):
                raise VersionConflictError(
                    "another writer took this version number at the same moment; "
                    "push again (nothing was recorded)"
                ) from None
            raise


@dataclass(frozen=True, slots=True)
class Opened:
    """A SQLite database opened as :func:`open_sqlite` could."""

    conn: SqliteConnection
    read_only: bool
    #: Opened read-only because the disk under it is full.
    full: bool


#: Checks a just-opened database before anything is written to it (the store's schema
#: refusals), given whether it is read-only.
Check = Callable[[SqliteConnection, bool], None]


def open_sqlite(
    path: Path, *, busy_timeout_s: float, create: bool, read_only: bool | None, check: Check
) -> Opened:
    """Open ``path`` (see the module docstring for what is refused and why); ``check``
    runs before the first write (journal mode, migrations), so a foreign database is
    refused untouched."""
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
        read_only = not os.access(path.parent, os.W_OK) or (exists and not os.access(path, os.W_OK))
    if not exists and (read_only or not create):
        raise NotARegistryError(f"no registry database at {path}")
    try:
        conn = _open(path, busy_timeout_s, exists=exists, read_only=read_only, check=check)
        return Opened(conn, read_only, full=False)
    except sqlite3.DatabaseError as exc:
        if exists and not read_only and _disk_full(path.parent):
            # SQLite cannot even start its write-ahead log: serve reads, refuse writes.
            conn = _open(path, busy_timeout_s, exists=True, read_only=True, check=check)
            return Opened(conn, read_only=True, full=True)
        raise NotARegistryError(f"{path} cannot be read as a registry database: {exc}") from None


def _open(
    path: Path, busy_timeout_s: float, *, exists: bool, read_only: bool, check: Check
) -> SqliteConnection:
    if not read_only:
        raw = _connect(path, busy_timeout_s, "rw" if exists else "rwc")
    else:
        raw = _connect(path, busy_timeout_s, "ro")
        try:
            raw.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            raw.close()  # WAL database, no -shm file, and none can be created here
            raw = _connect(path, busy_timeout_s, "immutable")
    try:
        conn = SqliteConnection(raw, path)
        check(conn, read_only)
        if not read_only:
            conn.prepare_for_writes()
    except BaseException:
        raw.close()
        raise
    return conn
