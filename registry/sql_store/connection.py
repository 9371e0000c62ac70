"""The seam between the store's SQL and a database: what every query module runs on.

The records layer is one set of SQL (the query modules and :mod:`registry.migrations`),
written in the common part of SQLite's and PostgreSQL's dialects: ``?`` parameters,
``ON CONFLICT ... DO NOTHING / DO UPDATE``, ``RETURNING``, rows read by column name or
position. A :class:`Connection` runs it on one database and owns the handful of spots
where the dialects differ, so no rule is written twice:

- parameter style and row access (:meth:`Connection.execute`);
- DDL types (:meth:`Connection.ddl`: SQLite's ``INTEGER PRIMARY KEY`` rowid and
  ``AUTOINCREMENT`` become PostgreSQL identities, ``REAL`` a double, ``TEXT`` byte-ordered
  as in SQLite) and the append-only guard (:meth:`Connection.forbid_changes`);
- where the schema version lives (``PRAGMA user_version``, or a ``registry_meta`` row);
- the write transaction: one writer at a time across every process (``BEGIN IMMEDIATE``,
  or a transaction-scoped advisory lock), with ``UNIQUE(name, version)`` still the
  guard, and each database's failures turned into the registry's typed errors;
- the clock leases are compared on (the database's, so many servers agree).

Implementations: :mod:`.sqlite` (a ``registry.db`` file) and :mod:`.postgres`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Row(Protocol):
    """A result row: by column name or by position."""

    def __getitem__(self, key: str | int) -> Any: ...

    def keys(self) -> Sequence[str]: ...


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """One open database (see the module docstring for what each method hides)."""

    #: ``sqlite`` or ``postgresql``.
    dialect: str
    #: What messages name: a file path, or ``database D on HOST:PORT`` (never a password).
    where: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def ddl(self, statement: str) -> None: ...

    def forbid_changes(self, table: str, message: str) -> None: ...

    def tables(self) -> set[str]: ...

    def user_version(self) -> int: ...

    def set_user_version(self, version: int) -> None: ...

    def write_transaction(self) -> AbstractContextManager[None]: ...

    def clock(self) -> float: ...

    def close(self) -> None: ...
