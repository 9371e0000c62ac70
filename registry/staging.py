"""Shared steps of every write: store files as blobs, claim a name, record a manifest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from registry.digest import ManifestEntry, manifest_digest, manifest_json
from registry.dirscan import ScannedFile
from registry.errors import NameConflictError, RegistryError
from registry.progress import byte_progress, want_progress

if TYPE_CHECKING:
    import sqlite3

    from registry.local import Registry


def store_files(
    reg: Registry, files: Sequence[ScannedFile], desc: str, progress: bool | None
) -> tuple[ManifestEntry, ...]:
    total = sum(f.size for f in files)
    show = want_progress(progress, total, reg.settings.progress_min_bytes)
    entries = []
    with byte_progress(total, desc, show) as on_bytes:
        for index, f in enumerate(files):
            hook = (lambda: reg.reached("blob_temp_written")) if index == 0 else None
            hexdigest, size = reg.blobs.put_file(f.path, on_bytes, before_rename=hook)
            if size != f.size:
                raise RegistryError(f"{f.relpath} changed while it was being stored; retry")
            entries.append(ManifestEntry(f.relpath, size, hexdigest))
    return tuple(entries)


def claim_name(conn: sqlite3.Connection, name: str, kind: str, at: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO names (name, kind, created_at) VALUES (?, ?, ?)", (name, kind, at)
    )
    row = conn.execute("SELECT kind FROM names WHERE name = ?", (name,)).fetchone()
    if row[0] != kind:
        raise NameConflictError(
            f"{name!r} already names a {row[0]}; base models, datasets and adapters share "
            "one namespace, so pick another name"
        )


def insert_manifest(conn: sqlite3.Connection, entries: Sequence[ManifestEntry]) -> str:
    digest = manifest_digest(entries)
    conn.execute(
        "INSERT OR IGNORE INTO manifests (digest, body, size, files) VALUES (?, ?, ?, ?)",
        (digest, manifest_json(entries).decode(), sum(e.size for e in entries), len(entries)),
    )
    return digest


def check_kind(reg: Registry, name: str, kind: str) -> None:
    existing = reg.store.kind_of(name)
    if existing not in (None, kind):
        raise NameConflictError(
            f"{name!r} already names a {existing}; base models, datasets and adapters share "
            "one namespace, so pick another name"
        )
