"""Recording base models and datasets (the things adapters are pinned to)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from registry.architecture import (
    chat_template,
    is_canonical_base_file,
    summarize,
    template_digest,
)
from registry.digest import manifest_digest
from registry.dirscan import ScanError, scan_directory
from registry.errors import InvalidBaseModelError, InvalidDatasetError, NameConflictError
from registry.records import BaseModel, Dataset
from registry.refs import check_name
from registry.sqlite_store import add_event, now_iso
from registry.staging import check_kind, claim_name, insert_manifest, store_files

if TYPE_CHECKING:
    from registry.local import Registry


def add_base(
    reg: Registry,
    path: Path,
    *,
    name: str,
    license: str | None = None,
    who: str | None = None,
    progress: bool | None = False,
) -> BaseModel:
    """Record a base model directory (its canonical files) and its architecture summary."""
    check_name(name)
    check_kind(reg, name, "base")
    try:
        files = [
            f
            for f in scan_directory(path, reg.settings.max_file_bytes)
            if is_canonical_base_file(f.relpath)
        ]
        architecture = summarize(files)
        template = template_digest(chat_template({f.relpath: f.path for f in files}))
    except ScanError as exc:
        raise InvalidBaseModelError(f"cannot add {path}: {exc}") from None
    except (ValueError, OSError) as exc:
        raise InvalidBaseModelError(f"cannot add base model from {path}: {exc}") from None
    entries = store_files(reg, files, f"base {name}", progress)
    digest = manifest_digest(entries)
    existing = reg.store.base_row(name)
    if existing is not None:
        if existing["digest"] == digest and existing["removed_at"] is None:
            return reg.base(name)
        raise NameConflictError(
            f"base model {name} already exists with other content ({existing['digest']}); "
            "pick another name (a base's content never changes)"
        )
    by, at = reg.who(who), now_iso()
    with reg.store.write() as conn:
        claim_name(conn, name, "base", at)
        insert_manifest(conn, entries)
        conn.execute(
            "INSERT INTO bases (name, digest, architecture, chat_template_digest, license,"
            " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, digest, json.dumps(architecture, sort_keys=True), template, license, by, at),
        )
        add_event(conn, at=at, who=by, action="base.add", name=name, detail={"digest": digest})
    return reg.base(name)


def _count_records(path: Path) -> int:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if isinstance(data, list):
            return len(data)
    with open(path, "rb") as fh:
        lines = sum(1 for line in fh if line.strip())
    return max(lines - 1, 0) if path.suffix.lower() in (".csv", ".tsv") else lines


def add_dataset(
    reg: Registry, path: Path, *, name: str, license: str | None = None, who: str | None = None
) -> Dataset:
    """Record a dataset file (content digest, record count, license)."""
    check_name(name)
    check_kind(reg, name, "dataset")
    if path.is_symlink() or not path.is_file():
        raise InvalidDatasetError(f"{path} is not a regular file")
    size = path.stat().st_size
    if size == 0 or size > reg.settings.max_file_bytes:
        raise InvalidDatasetError(
            f"{path} is {size} bytes; a dataset must be non-empty and at most "
            f"{reg.settings.max_file_bytes} bytes (REGISTRY_MAX_FILE_BYTES)"
        )
    hexdigest, size = reg.blobs.put_file(path)
    digest = f"sha256:{hexdigest}"
    existing = reg.store.dataset_row(name)
    if existing is not None:
        if existing["digest"] == digest and existing["removed_at"] is None:
            return reg.dataset(name)
        raise NameConflictError(
            f"dataset {name} already exists with other content ({existing['digest']}); "
            "pick another name"
        )
    by, at = reg.who(who), now_iso()
    with reg.store.write() as conn:
        claim_name(conn, name, "dataset", at)
        conn.execute(
            "INSERT INTO datasets (name, digest, filename, size, records, license, created_by,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, digest, path.name, size, _count_records(path), license, by, at),
        )
        add_event(conn, at=at, who=by, action="dataset.add", name=name, detail={"digest": digest})
    return reg.dataset(name)
