"""Ordered schema migrations, one function each; the schema version counts them.

Each migration runs on either database through the store's
:class:`~registry.sql_store.connection.Connection`: plain statements in the dialects'
common SQL, DDL through ``conn.ddl`` (which maps SQLite's types to PostgreSQL's), and
the schema version where the dialect keeps it (``PRAGMA user_version`` in SQLite).

Append new migrations to :data:`MIGRATIONS`; never edit one that has shipped. Room is
left for later issues: ``bases.parent_id``/``quantization`` hold variants, and traffic
splits and rollouts will be their own tables keyed by adapter ``name``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from registry.errors import SchemaVersionError

if TYPE_CHECKING:
    from registry.sql_store.connection import Connection

_INITIAL = (
    """CREATE TABLE names (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('base', 'dataset', 'adapter')),
        created_at TEXT NOT NULL)""",
    """CREATE TABLE manifests (
        digest TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        size INTEGER NOT NULL,
        files INTEGER NOT NULL)""",
    """CREATE TABLE bases (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE REFERENCES names(name),
        digest TEXT NOT NULL REFERENCES manifests(digest),
        architecture TEXT NOT NULL,
        chat_template_digest TEXT,
        license TEXT,
        parent_id INTEGER REFERENCES bases(id),
        quantization TEXT,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        removed_at TEXT,
        removed_by TEXT)""",
    "CREATE INDEX bases_digest ON bases(digest)",
    """CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE REFERENCES names(name),
        digest TEXT NOT NULL,
        filename TEXT NOT NULL,
        size INTEGER NOT NULL,
        records INTEGER NOT NULL,
        license TEXT,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        removed_at TEXT,
        removed_by TEXT)""",
    "CREATE INDEX datasets_digest ON datasets(digest)",
    """CREATE TABLE adapters (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL REFERENCES names(name),
        version INTEGER NOT NULL CHECK (version >= 1),
        digest TEXT NOT NULL REFERENCES manifests(digest),
        base_id INTEGER NOT NULL REFERENCES bases(id),
        dataset_id INTEGER REFERENCES datasets(id),
        dataset_unknown INTEGER NOT NULL DEFAULT 0,
        r INTEGER NOT NULL,
        lora_alpha REAL NOT NULL,
        target_modules TEXT NOT NULL,
        lora_dropout REAL NOT NULL,
        peft_config TEXT NOT NULL,
        chat_template_digest TEXT,
        schema TEXT,
        identity TEXT NOT NULL,
        meta TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        removed_at TEXT,
        removed_by TEXT,
        UNIQUE (name, version),
        CHECK (dataset_id IS NOT NULL OR dataset_unknown = 1))""",
    "CREATE INDEX adapters_digest ON adapters(digest)",
    "CREATE INDEX adapters_identity ON adapters(name, identity)",
    """CREATE TABLE aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (name, alias),
        FOREIGN KEY (name, version) REFERENCES adapters(name, version))""",
    "CREATE INDEX aliases_version ON aliases(name, version)",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER,
        detail TEXT NOT NULL DEFAULT '{}')""",
    "CREATE INDEX events_name ON events(name, id)",
)


def m0001_initial(db: Connection) -> None:
    """Names, manifests, bases, datasets, adapter versions, aliases, events."""
    for statement in _INITIAL:
        db.ddl(statement)
    db.forbid_changes("events", "the event log is append-only")


def m0002_code_lineage_and_production(db: Connection) -> None:
    """The training code's commit on each version; plain NAME becomes NAME@production.

    Before this, plain ``NAME`` meant the only live version when no ``production`` alias
    existed. Each such name now gets the alias on that version (logged as an event by
    ``migration``), so what ``NAME`` served is unchanged while the rule becomes strict.
    """
    db.ddl("ALTER TABLE adapters ADD COLUMN code_commit TEXT")
    db.ddl("ALTER TABLE adapters ADD COLUMN code_dirty INTEGER")
    rows = db.execute(
        "SELECT name, MIN(version) FROM adapters WHERE removed_at IS NULL GROUP BY name"
        " HAVING COUNT(*) = 1 AND name NOT IN"
        " (SELECT name FROM aliases WHERE alias = 'production')"
    ).fetchall()
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for name, version in rows:
        db.execute(
            "INSERT INTO aliases (name, alias, version, updated_by, updated_at)"
            " VALUES (?, 'production', ?, 'migration', ?)",
            (name, version, at),
        )
        db.execute(
            "INSERT INTO events (at, who, action, name, version, detail)"
            " VALUES (?, 'migration', 'alias.set', ?, ?, ?)",
            (at, name, version, json.dumps({"alias": "production", "from": None, "to": version})),
        )


def m0003_rollouts(db: Connection) -> None:
    """Canary rollouts: one row per rollout (plan, step, weight, state, lease) and its
    analyses. A partial unique index keeps at most one active rollout per name; the
    gateway's split for NAME is the active rollout's (production, canary, weight)."""
    db.ddl(
        """CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL REFERENCES names(name),
        stable INTEGER NOT NULL,
        canary INTEGER NOT NULL,
        steps TEXT NOT NULL,
        plan TEXT NOT NULL,
        step INTEGER NOT NULL DEFAULT 0,
        weight REAL NOT NULL CHECK (weight >= 0 AND weight <= 100),
        state TEXT NOT NULL
            CHECK (state IN ('active', 'promoted', 'rolled_back', 'aborted')),
        reason TEXT,
        started_by TEXT NOT NULL,
        started_at TEXT NOT NULL,
        step_started_at TEXT NOT NULL,
        ended_at TEXT,
        holder TEXT,
        lease_until REAL,
        FOREIGN KEY (name, stable) REFERENCES adapters(name, version),
        FOREIGN KEY (name, canary) REFERENCES adapters(name, version))"""
    )
    db.ddl("CREATE UNIQUE INDEX rollouts_one_active ON rollouts(name) WHERE state = 'active'")
    db.ddl("CREATE INDEX rollouts_name ON rollouts(name, id)")
    db.ddl(
        """CREATE TABLE rollout_analyses (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
        at TEXT NOT NULL,
        who TEXT NOT NULL,
        step INTEGER NOT NULL,
        weight REAL NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL,
        figures TEXT NOT NULL)"""
    )
    db.ddl("CREATE INDEX rollout_analyses_rollout ON rollout_analyses(rollout_id, id)")


def m0004_variants(db: Connection) -> None:
    """Quantized variants and their fidelity; adapter x variant evaluations.

    A variant is a row of ``bases`` (``parent_id`` and ``quantization`` = its method, the
    columns migration 1 left for it) plus one ``variants`` row: the recipe, calibration
    and library lineage, and the fidelity measured against the parent (JSON).
    ``pair_evals`` holds the latest gated result of each adapter version on each variant;
    re-evaluation replaces it (each evaluation is also an event)."""
    db.ddl(
        """CREATE TABLE variants (
        base_id INTEGER PRIMARY KEY REFERENCES bases(id),
        quantization TEXT NOT NULL,
        fidelity TEXT NOT NULL,
        passed INTEGER NOT NULL,
        forced INTEGER NOT NULL DEFAULT 0)"""
    )
    db.ddl(
        """CREATE TABLE pair_evals (
        adapter_id INTEGER NOT NULL REFERENCES adapters(id),
        base_id INTEGER NOT NULL REFERENCES bases(id),
        passed INTEGER NOT NULL,
        failed_gates TEXT NOT NULL,
        figures TEXT NOT NULL,
        evaluated_by TEXT NOT NULL,
        evaluated_at TEXT NOT NULL,
        PRIMARY KEY (adapter_id, base_id))"""
    )
    db.ddl("CREATE INDEX pair_evals_base ON pair_evals(base_id)")


def m0005_quarantine(db: Connection) -> None:
    """Quarantine of an adapter version: the reason, who and when (all NULL while it is
    not quarantined). Lifting clears them; the event log keeps both moves."""
    for column in ("quarantine_reason", "quarantined_by", "quarantined_at"):
        db.ddl(f"ALTER TABLE adapters ADD COLUMN {column} TEXT")


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    m0001_initial,
    m0002_code_lineage_and_production,
    m0003_rollouts,
    m0004_variants,
    m0005_quarantine,
)


def migrate(conn: Connection) -> int:
    """Apply pending migrations in one write transaction; return the schema version."""
    with conn.write_transaction():
        current = conn.user_version()
        if current > len(MIGRATIONS):
            raise SchemaVersionError(
                f"registry schema version {current} is newer than this loraport "
                f"({len(MIGRATIONS)}); upgrade loraport"
            )
        for number, migration in enumerate(MIGRATIONS[current:], start=current + 1):
            migration(conn)
            conn.set_user_version(number)
    return len(MIGRATIONS)
