"""The records of a registry directory's snapshot, loaded into a PostgreSQL database as
they are (``registry migrate --to postgresql://...``; the order around it is in
:mod:`registry.migrate`).

In one write transaction (the registry's write lock held, so no ``registry init`` or
second migration can interleave): the database is checked to hold no registry, the
schema is made by the same migrations ``registry init --store`` runs, every table is
loaded with ``COPY`` in foreign-key order (rows keep their ids, so version numbers,
event ids and the change token read the same), each identity is moved past the highest
id SQLite ever gave (``sqlite_sequence`` included, so an id is never reused), and where
the blobs live is recorded. A failure anywhere, or a kill, rolls all of it back: the
database stays empty and the migration can be run again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from graphlib import TopologicalSorter

from registry.deps import StepHook
from registry.errors import DestinationExistsError, SchemaVersionError, UnsupportedLocationError
from registry.migrations import migrate as migrate_schema
from registry.server_location import BLOBS_KEY, INIT_HINT
from registry.sql_store.core import check_schema
from registry.sql_store.postgres import PostgresConnection

#: Tables SQLite keeps for itself (AUTOINCREMENT's counters are read, not copied).
_SQLITE_OWN = "sqlite_sequence"


def check_empty(conn: PostgresConnection, blobs: str) -> None:
    """Refuse a database that holds anything but an empty registry (one fresh from
    ``registry init`` with the same blobs is fine), or something else entirely."""
    check_schema(conn, read_only=False, migrate_hint=INIT_HINT)  # foreign, damaged, newer
    if conn.user_version() == 0:
        return
    held = [
        table
        for table in sorted(conn.tables())
        if conn.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() is not None
    ]
    if held:
        raise DestinationExistsError(
            f"{conn.where} already holds a registry (records in {', '.join(held)}); migrate "
            "into a new, empty database (CREATE DATABASE ...)"
        )
    recorded = conn.meta(BLOBS_KEY)
    if recorded is not None and recorded != blobs:
        raise UnsupportedLocationError(
            f"the empty registry in {conn.where} was created with its blobs at {recorded}; "
            f"give --blobs {recorded}, or migrate into a new database"
        )


def _tables(snapshot: sqlite3.Connection) -> list[str]:
    """The snapshot's tables, each after every table it references."""
    names = [
        str(r[0])
        for r in snapshot.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != ? ORDER BY name",
            (_SQLITE_OWN,),
        )
    ]
    graph: TopologicalSorter[str] = TopologicalSorter()
    for table in names:
        referenced = {str(r[2]) for r in snapshot.execute(f'PRAGMA foreign_key_list("{table}")')}
        graph.add(table, *(referenced - {table}))
    return list(graph.static_order())


def _columns(snapshot: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in snapshot.execute(f'PRAGMA table_info("{table}")')]


def _rows(
    snapshot: sqlite3.Connection, table: str, columns: list[str]
) -> Iterator[tuple[object, ...]]:
    listed = ", ".join(f'"{c}"' for c in columns)
    for row in snapshot.execute(f'SELECT {listed} FROM "{table}" ORDER BY rowid'):
        yield tuple(row)


def _last_ids(snapshot: sqlite3.Connection, tables: list[str]) -> dict[str, int]:
    """The highest id each table has given: its largest row id, or AUTOINCREMENT's counter."""
    last: dict[str, int] = {}
    for table in tables:
        if "id" in _columns(snapshot, table):
            top = snapshot.execute(f'SELECT COALESCE(MAX(id), 0) FROM "{table}"').fetchone()
            last[table] = int(top[0])
    if snapshot.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_SQLITE_OWN,)
    ).fetchone():
        for name, seq in snapshot.execute(f"SELECT name, seq FROM {_SQLITE_OWN}"):
            if name in last:
                last[name] = max(last[name], int(seq))
    return last


def load(
    snapshot: sqlite3.Connection,
    conn: PostgresConnection,
    *,
    blobs: str,
    on_step: StepHook | None = None,
) -> dict[str, int]:
    """Copy every row of ``snapshot`` (a registry at this loraport's schema) into the
    empty database ``conn`` in one transaction; rows per table."""
    tables = _tables(snapshot)
    counts: dict[str, int] = {}
    with conn.write_transaction():
        check_empty(conn, blobs)  # again, now under the write lock
        migrate_schema(conn)
        if set(tables) != conn.tables():
            raise SchemaVersionError(
                f"the snapshot's tables ({', '.join(sorted(tables))}) are not the schema "
                f"this loraport makes in {conn.where} ({', '.join(sorted(conn.tables()))}); "
                "open the source once with this loraport to migrate it, then run again"
            )
        for table in tables:
            columns = _columns(snapshot, table)
            if set(columns) != set(conn.columns(table)):
                raise SchemaVersionError(
                    f"table {table} has columns {columns} in the snapshot but "
                    f"{conn.columns(table)} in {conn.where}; open the source once with this "
                    "loraport to migrate it, then run again"
                )
            counts[table] = conn.copy_rows(table, columns, _rows(snapshot, table, columns))
        last = _last_ids(snapshot, tables)
        for table in sorted(conn.identity_tables()):
            if last.get(table, 0) > 0:
                conn.advance_identity(table, last[table])
        conn.set_meta(BLOBS_KEY, blobs)
        if on_step is not None:
            on_step("records-loaded")  # the last moment before the commit
    return counts
