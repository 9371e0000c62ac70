"""The SQLite metadata store: every query the registry runs is in this module.

One connection per :class:`SqliteStore` (through sqlite-utils for migrations), WAL mode,
foreign keys on. Reads are short indexed queries (``resolve`` is two primary-key
lookups) and hand out frozen records. Writes happen inside :meth:`SqliteStore.write`, a
``BEGIN IMMEDIATE`` transaction that yields a :class:`Tx`, so concurrent processes
serialize on version allocation under ``UNIQUE(name, version)``.

Opening never guesses: a missing database is created only when asked (``create``), a
file that is not SQLite or a database that is not a registry is refused with
:class:`NotARegistryError`, and a database this process cannot write is opened
read-only (reads work; every write raises :class:`ReadOnlyRegistryError`). On a
read-only mount a WAL database whose ``-shm`` file cannot be created is opened
``immutable``: correct for a mount nobody writes through, which is what read-only means.
The schema's DDL lives in :mod:`registry.migrations`, next to its history.
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
from typing import Any, cast
from urllib.parse import quote

from sqlite_utils import Database

from registry.digest import Digest, ManifestEntry, manifest_digest, manifest_json
from registry.errors import (
    NameConflictError,
    NotARegistryError,
    ReadOnlyRegistryError,
    SchemaVersionError,
    VersionConflictError,
)
from registry.migrations import MIGRATIONS, migrate
from registry.records import (
    AdapterVersion,
    Analysis,
    BaseModel,
    CodeLineage,
    Dataset,
    Event,
    Kind,
    Lineage,
    PeftSummary,
    Rollout,
)

_ADAPTER_SELECT = """
SELECT a.*, b.name AS base_name, b.digest AS base_digest,
       d.name AS dataset_name, d.digest AS dataset_digest
FROM adapters a JOIN bases b ON b.id = a.base_id LEFT JOIN datasets d ON d.id = a.dataset_id
"""
_BASE_SELECT = """
SELECT b.*, p.name AS parent_name FROM bases b LEFT JOIN bases p ON p.id = b.parent_id
"""
_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUR_TABLES = {"names", "manifests", "bases", "datasets", "adapters", "aliases", "events"}
# sqlite3 primary result codes (the low byte of ``sqlite_errorcode``).
_SQLITE_READONLY = 8
_SQLITE_CONSTRAINT = 19

Row = dict[str, Any]


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


class SqliteStore:
    """Metadata of one registry, in ``registry.db``. Open with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
        self.conn = conn
        self.path = path
        self.read_only = read_only
        self.db = Database(conn)
        self.lock = threading.RLock()

    @classmethod
    def open(
        cls, path: Path, *, busy_timeout_s: float, create: bool, read_only: bool | None
    ) -> SqliteStore:
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
            raise NotARegistryError(
                f"{path} cannot be read as a registry database: {exc}"
            ) from None

    @classmethod
    def _open(
        cls, path: Path, busy_timeout_s: float, *, exists: bool, read_only: bool
    ) -> SqliteStore:
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
        self.conn.close()

    def check_writable(self) -> None:
        """Raise ReadOnlyRegistryError when this store was opened read-only."""
        if self.read_only:
            raise ReadOnlyRegistryError(
                f"the registry at {self.path.parent} is open read-only (this process cannot "
                "write there); run writes where the registry's directory is writable"
            )

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction (``BEGIN IMMEDIATE``); commits on success."""
        self.check_writable()
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield Tx(self)
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

    # -- names and lookups ------------------------------------------------------------
    def kind_of(self, name: str) -> Kind | None:
        row = self.one("SELECT kind FROM names WHERE name = ?", (name,))
        return cast(Kind, row["kind"]) if row else None

    def alias_target(self, name: str, alias: str) -> int | None:
        row = self.one("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias))
        return int(row["version"]) if row else None

    def aliases_of(self, name: str) -> dict[str, int]:
        rows = self.all("SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,))
        return {r["alias"]: int(r["version"]) for r in rows}

    def version_digest(self, name: str, version: int) -> tuple[Digest, bool] | None:
        """(digest, live) of NAME@N."""
        row = self.one(
            "SELECT digest, removed_at FROM adapters WHERE name = ? AND version = ?",
            (name, version),
        )
        return (Digest(row["digest"]), row["removed_at"] is None) if row else None

    def live_versions(self, name: str) -> list[int]:
        rows = self.all(
            "SELECT version FROM adapters WHERE name = ? AND removed_at IS NULL ORDER BY version",
            (name,),
        )
        return [int(r["version"]) for r in rows]

    def by_digest(self, digest: Digest) -> list[tuple[Kind, str, int | None]]:
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

    def record_digest(self, kind: Kind, name: str) -> tuple[Digest, bool] | None:
        """(digest, live) of a base model or dataset."""
        table = "bases" if kind == "base" else "datasets"
        row = self.one(f"SELECT digest, removed_at FROM {table} WHERE name = ?", (name,))
        return (Digest(row["digest"]), row["removed_at"] is None) if row else None

    # -- records ----------------------------------------------------------------------
    def adapter(self, name: str, version: int) -> AdapterVersion | None:
        row = self.one(_ADAPTER_SELECT + "WHERE a.name = ? AND a.version = ?", (name, version))
        if row is None:
            return None
        aliases = tuple(a for a, v in self.aliases_of(name).items() if v == version)
        return _adapter(row, aliases)

    def adapters(self, name: str | None = None) -> list[AdapterVersion]:
        """Live adapter versions ordered by name, version."""
        aliases: dict[tuple[str, int], list[str]] = {}
        for r in self.all("SELECT name, alias, version FROM aliases ORDER BY alias"):
            aliases.setdefault((r["name"], r["version"]), []).append(r["alias"])
        where = "WHERE a.removed_at IS NULL" + (" AND a.name = ?" if name else "")
        rows = self.all(
            _ADAPTER_SELECT + where + " ORDER BY a.name, a.version", (name,) if name else ()
        )
        return [_adapter(r, tuple(aliases.get((r["name"], r["version"]), ()))) for r in rows]

    def base(self, name: str) -> BaseModel | None:
        row = self.one(_BASE_SELECT + "WHERE b.name = ? AND b.removed_at IS NULL", (name,))
        return _base(row) if row else None

    def bases(self) -> list[BaseModel]:
        rows = self.all(_BASE_SELECT + "WHERE b.removed_at IS NULL ORDER BY b.name")
        return [_base(r) for r in rows]

    def dataset(self, name: str) -> Dataset | None:
        row = self.one("SELECT * FROM datasets WHERE name = ? AND removed_at IS NULL", (name,))
        return _dataset(row) if row else None

    def datasets(self) -> list[Dataset]:
        rows = self.all("SELECT * FROM datasets WHERE removed_at IS NULL ORDER BY name")
        return [_dataset(r) for r in rows]

    def dataset_file(self, name: str) -> ManifestEntry | None:
        """A dataset as the one file it is (its original file name, size, sha256)."""
        row = self.one("SELECT filename, size, digest FROM datasets WHERE name = ?", (name,))
        if row is None:
            return None
        return ManifestEntry(row["filename"], int(row["size"]), Digest(row["digest"]).hex)

    def dataset_by_digest(self, digest: Digest) -> Dataset | None:
        """The first live dataset (by name) with this content."""
        row = self.one(
            "SELECT * FROM datasets WHERE digest = ? AND removed_at IS NULL ORDER BY name LIMIT 1",
            (digest,),
        )
        return _dataset(row) if row else None

    def manifest_body(self, digest: Digest) -> str | None:
        row = self.one("SELECT body FROM manifests WHERE digest = ?", (digest,))
        return str(row["body"]) if row else None

    def manifests(self) -> list[tuple[Digest, str]]:
        rows = self.all("SELECT digest, body FROM manifests")
        return [(Digest(r["digest"]), r["body"]) for r in rows]

    def dataset_blobs(self) -> list[tuple[str, str]]:
        """(dataset name, blob hex digest) of every dataset, removed ones included."""
        rows = self.all("SELECT name, digest FROM datasets")
        return [(r["name"], Digest(r["digest"]).hex) for r in rows]

    def users_of(self, kind: Kind, name: str) -> list[str]:
        """Live adapter versions (``NAME@N``) built on base model or dataset ``name``."""
        table, column = ("bases", "base_id") if kind == "base" else ("datasets", "dataset_id")
        rows = self.all(
            f"SELECT a.name, a.version FROM adapters a JOIN {table} t ON t.id = a.{column} "
            "WHERE t.name = ? AND a.removed_at IS NULL ORDER BY a.name, a.version",
            (name,),
        )
        return [f"{r['name']}@{r['version']}" for r in rows]

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

    # -- rollouts ---------------------------------------------------------------------
    def active_rollout(self, name: str) -> Rollout | None:
        """The active rollout of adapter ``name`` (at most one), without its analyses."""
        row = self.one("SELECT * FROM rollouts WHERE name = ? AND state = 'active'", (name,))
        return _rollout(row, ()) if row else None

    def rollout(self, rollout_id: int) -> Rollout | None:
        """One rollout, with every analysis recorded for it."""
        row = self.one("SELECT * FROM rollouts WHERE id = ?", (rollout_id,))
        return _rollout(row, tuple(self.analyses(rollout_id))) if row else None

    def rollouts(self, name: str) -> list[Rollout]:
        """Every rollout of ``name``, oldest first, with their analyses."""
        rows = self.all("SELECT * FROM rollouts WHERE name = ? ORDER BY id", (name,))
        return [_rollout(r, tuple(self.analyses(int(r["id"])))) for r in rows]

    def analyses(self, rollout_id: int) -> list[Analysis]:
        rows = self.all(
            "SELECT * FROM rollout_analyses WHERE rollout_id = ? ORDER BY id", (rollout_id,)
        )
        return [
            Analysis(
                id=int(r["id"]),
                at=r["at"],
                who=r["who"],
                step=int(r["step"]),
                weight=float(r["weight"]),
                verdict=r["verdict"],
                reason=r["reason"],
                figures=json.loads(r["figures"]),
            )
            for r in rows
        ]


class Tx:
    """The writes of one transaction (only made by :meth:`SqliteStore.write`)."""

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

    def claim_name(self, name: str, kind: Kind, at: str) -> None:
        """Record ``name`` as a ``kind`` (no-op if it already is one)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO names (name, kind, created_at) VALUES (?, ?, ?)",
            (name, kind, at),
        )
        row = self.conn.execute("SELECT kind FROM names WHERE name = ?", (name,)).fetchone()
        if row[0] != kind:
            raise NameConflictError(
                f"{name!r} already names a {row[0]}; base models, datasets and adapters "
                "share one namespace, so pick another name"
            )

    def insert_manifest(self, entries: tuple[ManifestEntry, ...]) -> Digest:
        digest = manifest_digest(entries)
        self.conn.execute(
            "INSERT OR IGNORE INTO manifests (digest, body, size, files) VALUES (?, ?, ?, ?)",
            (digest, manifest_json(entries).decode(), sum(e.size for e in entries), len(entries)),
        )
        return digest

    def insert_base(
        self,
        *,
        name: str,
        digest: Digest,
        architecture: dict[str, Any],
        template: str | None,
        license: str | None,
        who: str,
        at: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO bases (name, digest, architecture, chat_template_digest, license,"
            " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, digest, json.dumps(architecture, sort_keys=True), template, license, who, at),
        )
        self.event(at=at, who=who, action="base.add", name=name, detail={"digest": digest})

    def insert_dataset(
        self,
        *,
        name: str,
        digest: Digest,
        filename: str,
        size: int,
        records: int,
        license: str | None,
        who: str,
        at: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO datasets (name, digest, filename, size, records, license, created_by,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, digest, filename, size, records, license, who, at),
        )
        self.event(at=at, who=who, action="dataset.add", name=name, detail={"digest": digest})

    def version_with_identity(self, name: str, identity: str) -> int | None:
        """The live version of ``name`` with this identity (same content and lineage)."""
        row = self.conn.execute(
            "SELECT version FROM adapters WHERE name = ? AND identity = ? AND removed_at IS NULL "
            "ORDER BY version LIMIT 1",
            (name, identity),
        ).fetchone()
        return int(row[0]) if row else None

    def insert_adapter(
        self,
        *,
        name: str,
        digest: Digest,
        base: str,
        dataset: str | None,
        peft: PeftSummary,
        peft_config: dict[str, Any],
        template: str | None,
        schema: dict[str, Any] | None,
        identity: str,
        meta: dict[str, Any],
        code: CodeLineage | None,
        who: str,
        at: str,
    ) -> int:
        """Allocate the next version of ``name``, insert it and log the push."""
        self.claim_name(name, "adapter", at)
        version = int(
            self.conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM adapters WHERE name = ?", (name,)
            ).fetchone()[0]
        )
        base_id = self.conn.execute("SELECT id FROM bases WHERE name = ?", (base,)).fetchone()[0]
        dataset_id = None
        if dataset is not None:
            row = self.conn.execute("SELECT id FROM datasets WHERE name = ?", (dataset,))
            dataset_id = row.fetchone()[0]
        self.conn.execute(
            "INSERT INTO adapters (name, version, digest, base_id, dataset_id, dataset_unknown,"
            " r, lora_alpha, target_modules, lora_dropout, peft_config, chat_template_digest,"
            " schema, identity, meta, code_commit, code_dirty, created_by, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                version,
                digest,
                base_id,
                dataset_id,
                0 if dataset_id is not None else 1,
                peft.r,
                peft.lora_alpha,
                json.dumps(list(peft.target_modules)),
                peft.lora_dropout,
                json.dumps(peft_config, sort_keys=True),
                template,
                json.dumps(schema) if schema is not None else None,
                identity,
                json.dumps(meta, sort_keys=True),
                code.commit if code else None,
                None if code is None or code.dirty is None else int(code.dirty),
                who,
                at,
            ),
        )
        detail: dict[str, Any] = {"digest": digest, "base": base, "dataset": dataset}
        if code is not None:
            detail["code"] = code.commit
            detail["code_dirty"] = code.dirty
        self.event(at=at, who=who, action="push", name=name, version=version, detail=detail)
        return version

    def move_alias(self, *, name: str, alias: str, version: int, who: str, at: str) -> None:
        """Point ``name@alias`` at ``version`` and log it (no-op if it already does)."""
        old = self.store.alias_target(name, alias)
        if old == version:
            return
        self.conn.execute(
            "INSERT INTO aliases (name, alias, version, updated_by, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, alias) DO UPDATE SET"
            " version = excluded.version, updated_by = excluded.updated_by,"
            " updated_at = excluded.updated_at",
            (name, alias, version, who, at),
        )
        self.event(
            at=at,
            who=who,
            action="alias.set",
            name=name,
            version=version,
            detail={"alias": alias, "from": old, "to": version},
        )

    def delete_alias(self, *, name: str, alias: str, old: int, who: str, at: str) -> None:
        self.conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
        self.event(
            at=at,
            who=who,
            action="alias.remove",
            name=name,
            version=old,
            detail={"alias": alias, "from": old},
        )

    def remove(
        self, *, kind: Kind, name: str, version: int | None, digest: Digest, who: str, at: str
    ) -> None:
        """Soft-delete an adapter version, base model or dataset, and log it."""
        if kind == "adapter":
            self.conn.execute(
                "UPDATE adapters SET removed_at = ?, removed_by = ? WHERE name = ? AND version = ?",
                (at, who, name, version),
            )
        else:
            table = "bases" if kind == "base" else "datasets"
            self.conn.execute(
                f"UPDATE {table} SET removed_at = ?, removed_by = ? WHERE name = ?",
                (at, who, name),
            )
        self.event(
            at=at,
            who=who,
            action="remove",
            name=name,
            version=version,
            detail={"kind": kind, "digest": digest},
        )

    # -- rollouts ---------------------------------------------------------------------
    def insert_rollout(
        self,
        *,
        name: str,
        stable: int,
        canary: int,
        steps: tuple[float, ...],
        plan: dict[str, Any],
        who: str,
        at: str,
    ) -> int:
        """Record a new active rollout at its first step and log it."""
        cursor = self.conn.execute(
            "INSERT INTO rollouts (name, stable, canary, steps, plan, step, weight, state,"
            " started_by, started_at, step_started_at) VALUES (?, ?, ?, ?, ?, 0, ?, 'active',"
            " ?, ?, ?)",
            (name, stable, canary, json.dumps(list(steps)), json.dumps(plan, sort_keys=True),
             steps[0], who, at, at),
        )  # fmt: skip
        rollout_id = int(cursor.lastrowid or 0)
        self.event(
            at=at,
            who=who,
            action="rollout.start",
            name=name,
            version=canary,
            detail={"rollout": rollout_id, "stable": stable, "steps": list(steps),
                    "weight": steps[0], "plan": plan},
        )  # fmt: skip
        return rollout_id

    def move_rollout(
        self, *, rollout: Rollout, step: int, weight: float, reason: str, who: str, at: str
    ) -> None:
        """Set an active rollout's step and canary weight, and log it."""
        self.conn.execute(
            "UPDATE rollouts SET step = ?, weight = ?, step_started_at = ? WHERE id = ?",
            (step, weight, at, rollout.id),
        )
        self.event(
            at=at,
            who=who,
            action="rollout.step",
            name=rollout.name,
            version=rollout.canary,
            detail={"rollout": rollout.id, "step": step, "from": rollout.weight,
                    "weight": weight, "reason": reason},
        )  # fmt: skip

    def insert_analysis(
        self,
        *,
        rollout: Rollout,
        verdict: str,
        reason: str,
        figures: dict[str, Any],
        who: str,
        at: str,
    ) -> None:
        """Record one judgement of the rollout's current step, and log it."""
        self.conn.execute(
            "INSERT INTO rollout_analyses (rollout_id, at, who, step, weight, verdict, reason,"
            " figures) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (rollout.id, at, who, rollout.step, rollout.weight, verdict, reason,
             json.dumps(figures, sort_keys=True)),
        )  # fmt: skip
        self.event(
            at=at,
            who=who,
            action="rollout.analysis",
            name=rollout.name,
            version=rollout.canary,
            detail={"rollout": rollout.id, "step": rollout.step, "weight": rollout.weight,
                    "verdict": verdict, "reason": reason, "figures": figures},
        )  # fmt: skip

    def end_rollout(self, *, rollout: Rollout, state: str, reason: str, who: str, at: str) -> None:
        """End an active rollout (its canary weight drops to 0) and log why."""
        self.conn.execute(
            "UPDATE rollouts SET state = ?, weight = 0, reason = ?, ended_at = ?, holder = NULL,"
            " lease_until = NULL WHERE id = ?",
            (state, reason, at, rollout.id),
        )
        self.event(
            at=at,
            who=who,
            action=f"rollout.{state}",
            name=rollout.name,
            version=rollout.canary,
            detail={"rollout": rollout.id, "stable": rollout.stable, "step": rollout.step,
                    "weight": rollout.weight, "reason": reason},
        )  # fmt: skip

    def set_lease(self, *, rollout: Rollout, holder: str | None, until: float | None) -> bool:
        """Give the rollout's lease to ``holder`` until ``until`` (epoch s). True when the
        holder changed (the caller logs that; a renewal is not an event)."""
        self.conn.execute(
            "UPDATE rollouts SET holder = ?, lease_until = ? WHERE id = ?",
            (holder, until, rollout.id),
        )
        return holder != rollout.holder


def _rollout(row: Row, analyses: tuple[Analysis, ...]) -> Rollout:
    return Rollout(
        id=int(row["id"]),
        name=row["name"],
        stable=int(row["stable"]),
        canary=int(row["canary"]),
        steps=tuple(float(w) for w in json.loads(row["steps"])),
        plan=json.loads(row["plan"]),
        step=int(row["step"]),
        weight=float(row["weight"]),
        state=row["state"],
        reason=row["reason"],
        started_by=row["started_by"],
        started_at=row["started_at"],
        step_started_at=row["step_started_at"],
        ended_at=row["ended_at"],
        holder=row["holder"],
        lease_until=None if row["lease_until"] is None else float(row["lease_until"]),
        analyses=analyses,
    )


def _adapter(row: Row, aliases: tuple[str, ...]) -> AdapterVersion:
    schema = json.loads(row["schema"]) if row["schema"] else None
    code = None
    if row.get("code_commit"):
        dirty = row.get("code_dirty")
        code = CodeLineage(row["code_commit"], None if dirty is None else bool(dirty))
    dataset_digest = row["dataset_digest"]
    return AdapterVersion(
        name=row["name"],
        version=int(row["version"]),
        digest=Digest(row["digest"]),
        base_model=Lineage(row["base_name"], Digest(row["base_digest"])),
        dataset=Lineage(row["dataset_name"], Digest(dataset_digest) if dataset_digest else None),
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
        code=code,
    )


def _base(row: Row) -> BaseModel:
    return BaseModel(
        name=row["name"],
        digest=Digest(row["digest"]),
        architecture=json.loads(row["architecture"]),
        license=row["license"],
        parent=row["parent_name"],
        quantization=row["quantization"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        chat_template_digest=row["chat_template_digest"],
    )


def _dataset(row: Row) -> Dataset:
    return Dataset(
        name=row["name"],
        digest=Digest(row["digest"]),
        records=int(row["records"]),
        size=int(row["size"]),
        license=row["license"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )
