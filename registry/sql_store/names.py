"""The one namespace and what spans every kind of record: lookups by name or digest,
who uses a base or dataset, and soft removal.

Base models, datasets and adapters share the ``names`` table, so a name is claimed once
for one kind and keeps it (a removed record's name stays taken).
"""

from __future__ import annotations

from typing import cast

from registry.digest import Digest
from registry.names import name_refusal
from registry.records import Kind
from registry.sql_store.core import StoreCore, TxCore


class NameReads(StoreCore):
    def kind_of(self, name: str) -> Kind | None:
        row = self.one("SELECT kind FROM names WHERE name = ?", (name,))
        return cast(Kind, row["kind"]) if row else None

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

    def users_of(self, kind: Kind, name: str) -> list[str]:
        """Live adapter versions (``NAME@N``) built on base model or dataset ``name``, and
        the live variants (``variant NAME``) whose parent is base ``name``."""
        table, column = ("bases", "base_id") if kind == "base" else ("datasets", "dataset_id")
        rows = self.all(
            f"SELECT a.name, a.version FROM adapters a JOIN {table} t ON t.id = a.{column} "
            "WHERE t.name = ? AND a.removed_at IS NULL ORDER BY a.name, a.version",
            (name,),
        )
        users = [f"{r['name']}@{r['version']}" for r in rows]
        if kind == "base":
            children = self.all(
                "SELECT v.name FROM bases v JOIN bases p ON p.id = v.parent_id "
                "WHERE p.name = ? AND v.removed_at IS NULL ORDER BY v.name",
                (name,),
            )
            users += [f"variant {r['name']}" for r in children]
        return users


class NameWrites(TxCore):
    def claim_name(self, name: str, kind: Kind, at: str) -> None:
        """Record ``name`` as a ``kind`` (no-op if it already is one)."""
        self.conn.execute(
            "INSERT INTO names (name, kind, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (name, kind, at),
        )
        row = self.conn.execute("SELECT kind FROM names WHERE name = ?", (name,)).fetchone()
        refused = name_refusal(name, cast(Kind, row[0]), kind)
        if refused is not None:
            raise refused

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
