"""Base models, datasets and manifests (what :mod:`registry.catalog` records).

A manifest is the file list (relative path, size, blob digest) of a base model or an
adapter version, stored once by its digest; a dataset is one file, so its digest is its
blob's.
"""

from __future__ import annotations

import json
from typing import Any

from registry.digest import Digest, ManifestEntry, manifest_digest, manifest_json
from registry.records import BaseModel, Dataset
from registry.sql_store.core import Row, StoreCore, TxCore

_BASE_SELECT = """
SELECT b.*, p.name AS parent_name FROM bases b LEFT JOIN bases p ON p.id = b.parent_id
"""


class CatalogReads(StoreCore):
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


class CatalogWrites(TxCore):
    def insert_manifest(self, entries: tuple[ManifestEntry, ...]) -> Digest:
        digest = manifest_digest(entries)
        self.conn.execute(
            "INSERT INTO manifests (digest, body, size, files) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
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
