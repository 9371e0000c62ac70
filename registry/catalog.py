"""Recording base models and datasets (the things adapters are pinned to).

A base model's record keeps, in its architecture summary under ``norms``, the Frobenius
norm ``||W||_F`` of each 2-D weight: the scale a push holds an adapter's update to
(:mod:`registry.adapter_bounds`). :func:`base_norms` gives them to a push, reading them
from the stored blobs for a base recorded before they were kept, and from the parent for
a quantized variant (whose compressed weights are not the served scale).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.architecture import (
    chat_template,
    is_canonical_base_file,
    summarize,
    template_digest,
)
from registry.blobs import FileBlobStore
from registry.deps import Deps
from registry.digest import Digest, ManifestEntry, manifest_digest, parse_manifest
from registry.dirscan import ScanError, ScannedFile, scan_directory
from registry.errors import (
    IntegrityError,
    InvalidBaseModelError,
    InvalidDatasetError,
    NameConflictError,
)
from registry.names import check_new_name
from registry.records import BaseModel, Dataset
from registry.sql_store import Tx, now_iso
from registry.staging import store_files
from registry.weights import module_norms

#: The architecture summary's key for the per-module ``||W||_F``.
NORMS = "norms"


@dataclass(frozen=True, slots=True)
class ScannedBase:
    """A base model directory as it will be recorded: its canonical files, architecture
    summary and chat template digest."""

    files: list[ScannedFile]
    architecture: dict[str, Any]
    template: str | None


def scan_base(path: Path, max_file_bytes: int, *, what: str, norms: bool) -> ScannedBase:
    """Scan a base model directory (a base, or a quantized variant: ``what``) for its
    canonical files and summarise it; with ``norms``, keep each 2-D weight's ``||W||_F``
    (a quantized model's are not the served scale, so it never gets them).
    InvalidBaseModelError says what is wrong."""
    try:
        files = [
            f for f in scan_directory(path, max_file_bytes) if is_canonical_base_file(f.relpath)
        ]
        architecture = summarize(files)
        if norms and "quantization_config" not in architecture:
            weights = [f.path for f in files if f.relpath.endswith(".safetensors")]
            architecture[NORMS] = module_norms(weights, architecture["modules"])
        template = template_digest(chat_template({f.relpath: f.path for f in files}))
    except (ScanError, ValueError, OSError, RecursionError) as exc:
        raise InvalidBaseModelError(f"cannot record {what} from {path}: {exc}") from None
    return ScannedBase(files, architecture, template)


def base_digest_of(path: Path, max_file_bytes: int) -> Digest:
    """The digest ``add_base`` would record for the directory at ``path`` (its canonical
    files, hashed; nothing stored): how a server proves which base it runs.
    InvalidBaseModelError says what is wrong."""
    try:
        files = [
            f for f in scan_directory(path, max_file_bytes) if is_canonical_base_file(f.relpath)
        ]
        entries = tuple(ManifestEntry(f.relpath, f.size, _sha256_file(f.path)) for f in files)
    except (ScanError, OSError) as exc:
        raise InvalidBaseModelError(f"cannot read base model {path}: {exc}") from None
    if not entries:
        raise InvalidBaseModelError(f"{path} holds no base model files")
    return manifest_digest(entries)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def add_base(
    deps: Deps,
    path: Path,
    *,
    name: str,
    license: str | None = None,
    who: str | None = None,
    progress: bool | None = False,
) -> BaseModel:
    """Record a base model directory (its canonical files) and its architecture summary."""
    check_new_name(deps.store, name, "base")
    scanned = scan_base(path, deps.settings.max_file_bytes, what="base model", norms=True)
    existing = deps.store.record_digest("base", name)
    entries = store_files(
        deps.blobs,
        scanned.files,
        f"base {name}",
        progress=progress,
        progress_min_bytes=deps.settings.progress_min_bytes,
    )
    digest = manifest_digest(entries)
    if existing is not None:
        if existing == (digest, True):
            return _base(deps, name)
        raise NameConflictError(
            f"base model {name} already exists with other content ({existing[0]}); "
            "pick another name (a base's content never changes)"
        )
    by, at = deps.who(who), now_iso()
    with deps.store.write() as tx:
        tx.claim_name(name, "base", at)
        tx.insert_manifest(entries)
        tx.insert_base(
            name=name,
            digest=digest,
            architecture=scanned.architecture,
            template=scanned.template,
            license=license,
            who=by,
            at=at,
        )
    return _base(deps, name)


def _base(deps: Deps, name: str) -> BaseModel:
    record = deps.store.base(name)
    assert record is not None, name
    return record


def _count_records(path: Path) -> int:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            data = None
        if isinstance(data, list):
            return len(data)
    with open(path, "rb") as fh:
        lines = sum(1 for line in fh if line.strip())
    return max(lines - 1, 0) if path.suffix.lower() in (".csv", ".tsv") else lines


@dataclass(frozen=True, slots=True)
class StagedDataset:
    """A dataset file whose bytes are in the blob store, not yet recorded."""

    digest: Digest
    filename: str
    size: int
    records: int


def check_dataset_file(path: Path, max_file_bytes: int) -> int:
    """The size of a dataset file fit to record; InvalidDatasetError says what is wrong
    (a registry service's client checks with this too, before it sends a byte)."""
    if path.is_symlink() or not path.is_file():
        raise InvalidDatasetError(f"{path} is not a regular file; pass a dataset file or ref")
    size = path.stat().st_size
    if size == 0 or size > max_file_bytes:
        raise InvalidDatasetError(
            f"{path} is {size} bytes; a dataset must be non-empty and at most "
            f"{max_file_bytes} bytes (REGISTRY_MAX_FILE_BYTES)"
        )
    if not os.access(path, os.R_OK):
        raise InvalidDatasetError(f"{path} cannot be read (permissions); check who owns it")
    return size


def stage_dataset(deps: Deps, path: Path) -> StagedDataset:
    """Check a dataset file and store its bytes (content-addressed)."""
    check_dataset_file(path, deps.settings.max_file_bytes)
    hexdigest, size = deps.blobs.put_file(path)
    return StagedDataset(Digest.from_hex(hexdigest), path.name, size, _count_records(path))


def record_dataset(
    tx: Tx, staged: StagedDataset, *, name: str, license: str | None, who: str, at: str
) -> None:
    """Insert a staged dataset under ``name`` (inside the caller's transaction)."""
    tx.claim_name(name, "dataset", at)
    tx.insert_dataset(
        name=name,
        digest=staged.digest,
        filename=staged.filename,
        size=staged.size,
        records=staged.records,
        license=license,
        who=who,
        at=at,
    )


def add_dataset(
    deps: Deps, path: Path, *, name: str, license: str | None = None, who: str | None = None
) -> Dataset:
    """Record a dataset file (content digest, record count, license)."""
    check_new_name(deps.store, name, "dataset")
    staged = stage_dataset(deps, path)
    existing = deps.store.record_digest("dataset", name)
    if existing is not None:
        if existing == (staged.digest, True):
            return _dataset(deps, name)
        raise NameConflictError(
            f"dataset {name} already exists with other content ({existing[0]}); pick another name"
        )
    by, at = deps.who(who), now_iso()
    with deps.store.write() as tx:
        record_dataset(tx, staged, name=name, license=license, who=by, at=at)
    return _dataset(deps, name)


def _dataset(deps: Deps, name: str) -> Dataset:
    record = deps.store.dataset(name)
    assert record is not None, name
    return record


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def content_dataset_name(filename: str, digest: Digest, taken: Callable[[str], bool]) -> str:
    """A name for a dataset given as a file: its stem, else stem + 12 hex of its digest.

    ``taken`` says which names it must not use (the adapter being pushed, any name
    already recorded), so a file named after its task never collides with it.
    """
    stem = _UNSAFE_NAME_CHARS.sub("-", Path(filename).stem).strip("-._")[:100] or "dataset"
    for candidate in (stem, f"{stem}-{digest.hex[:12]}"):
        if not taken(candidate):
            return candidate
    return f"dataset-{digest.hex[:12]}"


def base_norms(
    deps: Deps, base: BaseModel, modules: Collection[str]
) -> tuple[Mapping[str, float] | None, str | None]:
    """``||W||_F`` of ``modules`` in ``base`` (or its parent), and why none, if none."""
    source = base
    if base.parent is not None:
        parent = deps.store.base(base.parent)
        if parent is None:
            return None, f"variant {base.name}'s parent {base.parent} is removed"
        source = parent
    stored = source.architecture.get(NORMS)
    if isinstance(stored, dict):
        return {m: float(stored[m]) for m in modules if m in stored}, None
    if "quantization_config" in source.architecture:
        return None, f"base {source.name} holds quantized weights and has no parent"
    return _norms_from_blobs(deps, source, modules), None


def _norms_from_blobs(deps: Deps, base: BaseModel, modules: Collection[str]) -> dict[str, float]:
    """The norms of a base recorded before they were kept, read from its stored weights."""
    body = deps.store.manifest_body(base.digest)
    if body is None:
        raise IntegrityError(f"the manifest of base {base.name} is missing from the database")
    weights = [e for e in parse_manifest(body) if e.path.endswith(".safetensors")]
    try:
        if isinstance(deps.blobs, FileBlobStore):
            return module_norms([deps.blobs.path(e.sha256) for e in weights], modules)
        with tempfile.TemporaryDirectory(prefix="loraport-norms-") as tmp:
            paths = []
            for entry in weights:
                deps.blobs.copy_out(entry.sha256, Path(tmp) / entry.sha256)
                paths.append(Path(tmp) / entry.sha256)
            return module_norms(paths, modules)
    except (OSError, ValueError) as exc:
        raise IntegrityError(
            f"cannot read the weights of base {base.name} ({exc}); run `registry verify`"
        ) from None
