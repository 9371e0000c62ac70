"""Adapter versions and their aliases (what :mod:`registry.push` records and refs resolve).

``NAME@N`` is allocated inside the write transaction (the next number under
``UNIQUE(name, version)``) and never reused; aliases are the only mutable pointers.
"""

from __future__ import annotations

import json
from typing import Any

from registry.digest import Digest
from registry.records import AdapterVersion, CodeLineage, Lineage, PeftSummary, Quarantine
from registry.sql_store.core import Row, StoreCore
from registry.sql_store.names import NameWrites

_ADAPTER_SELECT = """
SELECT a.*, b.name AS base_name, b.digest AS base_digest,
       d.name AS dataset_name, d.digest AS dataset_digest
FROM adapters a JOIN bases b ON b.id = a.base_id LEFT JOIN datasets d ON d.id = a.dataset_id
"""


class AdapterReads(StoreCore):
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

    def adapter(self, name: str, version: int) -> AdapterVersion | None:
        row = self.one(_ADAPTER_SELECT + "WHERE a.name = ? AND a.version = ?", (name, version))
        if row is None:
            return None
        aliases = tuple(a for a, v in self.aliases_of(name).items() if v == version)
        return _adapter(row, aliases)

    def quarantined(self) -> list[AdapterVersion]:
        """Live adapter versions under quarantine, ordered by name, version."""
        return [a for a in self.adapters() if a.quarantine is not None]

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


class AdapterWrites(NameWrites):
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

    def set_quarantine(self, *, name: str, version: int, reason: str, who: str, at: str) -> None:
        """Quarantine ``name@version`` (callers check it is live and not yet quarantined)."""
        self.conn.execute(
            "UPDATE adapters SET quarantine_reason = ?, quarantined_by = ?, quarantined_at = ?"
            " WHERE name = ? AND version = ?",
            (reason, who, at, name, version),
        )
        self.event(
            at=at,
            who=who,
            action="quarantine",
            name=name,
            version=version,
            detail={"reason": reason},
        )

    def clear_quarantine(self, *, name: str, version: int, reason: str, who: str, at: str) -> None:
        """Lift the quarantine of ``name@version``; the event keeps the reason it had."""
        self.conn.execute(
            "UPDATE adapters SET quarantine_reason = NULL, quarantined_by = NULL,"
            " quarantined_at = NULL WHERE name = ? AND version = ?",
            (name, version),
        )
        self.event(
            at=at,
            who=who,
            action="quarantine.lift",
            name=name,
            version=version,
            detail={"reason": reason},
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
        quarantine=_quarantine(row),
    )


def _quarantine(row: Row) -> Quarantine | None:
    reason = row.get("quarantine_reason")
    if reason is None:
        return None
    return Quarantine(reason, row["quarantined_by"] or "", row["quarantined_at"] or "")
