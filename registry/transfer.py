"""Getting bytes back out: ``pull`` (verified, atomic) and ``verify`` (re-hash, orphans)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from registry.blobs import fsync_dir
from registry.digest import ManifestEntry, manifest_digest, parse_manifest, sha256_bytes
from registry.errors import DestinationExistsError, IntegrityError, RefNotFoundError
from registry.progress import byte_progress, want_progress
from registry.records import Resolved, VerifyReport

if TYPE_CHECKING:
    from registry.local import Registry


def _manifest(reg: Registry, digest: str) -> tuple[ManifestEntry, ...]:
    body = reg.store.manifest_body(digest)
    if body is None:
        raise IntegrityError(f"the manifest of {digest} is missing from the database")
    if "sha256:" + sha256_bytes(body.encode()) != digest:
        raise IntegrityError(f"the manifest of {digest} no longer hashes to its digest")
    entries = parse_manifest(body)
    if manifest_digest(entries) != digest:
        raise IntegrityError(f"the manifest of {digest} is not canonical")
    return entries


def _entries(reg: Registry, target: Resolved) -> tuple[ManifestEntry, ...]:
    if target.kind != "dataset":
        return _manifest(reg, target.digest)
    row = reg.store.dataset_row(target.name)
    if row is None:
        raise RefNotFoundError(f"dataset {target.name} is gone")
    return (ManifestEntry(row["filename"], int(row["size"]), target.digest.split(":", 1)[1]),)


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise DestinationExistsError(f"{dest} exists and is not a directory; pick another DEST")
    if dest.is_dir() and any(dest.iterdir()):
        raise DestinationExistsError(f"{dest} is not empty; pull into a new or empty directory")


def pull(reg: Registry, ref: str, dest: Path, *, progress: bool | None = False) -> Path:
    """Rebuild ``ref``'s directory at ``dest``: every file verified, then one rename."""
    target = reg.resolve(ref)
    _check_dest(dest)
    entries = _entries(reg, target)
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.pull-", dir=dest.parent))
    total = sum(e.size for e in entries)
    try:
        with byte_progress(
            total, f"pull {ref}", want_progress(progress, total, reg.settings.progress_min_bytes)
        ) as on_bytes:
            for entry in entries:
                relpath = PurePosixPath(entry.path)
                if relpath.is_absolute() or ".." in relpath.parts:
                    raise IntegrityError(f"unsafe path {entry.path!r} in manifest")
                out = temp.joinpath(*relpath.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                reg.blobs.copy_out(entry.sha256, out, on_bytes)
                if out.stat().st_size != entry.size:
                    raise IntegrityError(f"{entry.path} has the wrong size")
        for directory in sorted({p for p in temp.rglob("*") if p.is_dir()} | {temp}):
            fsync_dir(directory)
        _check_dest(dest)
        if dest.is_dir():
            dest.rmdir()
        os.rename(temp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return dest


def _referenced(reg: Registry) -> dict[str, list[str]]:
    """blob hex digest -> the records/manifests that need it."""
    needed: dict[str, list[str]] = {}
    for digest, body in reg.store.manifests():
        for entry in parse_manifest(body):
            needed.setdefault(entry.sha256, []).append(f"{digest}:{entry.path}")
    for row in reg.store.all("SELECT name, digest FROM datasets"):
        needed.setdefault(row["digest"].split(":", 1)[1], []).append(f"dataset {row['name']}")
    return needed


def verify(reg: Registry, ref: str | None, *, gc: bool, gc_grace_s: float) -> VerifyReport:
    """Re-hash every blob that metadata names (or those of ``ref``); list orphans."""
    errors: list[str] = []
    if ref is not None:
        target = reg.resolve(ref)
        try:
            entries = _entries(reg, target)
        except IntegrityError as exc:
            return VerifyReport(checked=0, errors=(str(exc),))
        for entry in entries:
            problem = reg.blobs.problem(entry.sha256)
            if problem:
                errors.append(f"{ref}: {entry.path} (sha256:{entry.sha256}) is {problem}")
        return VerifyReport(checked=len(entries), errors=tuple(errors))
    for digest, _ in reg.store.manifests():
        try:
            _manifest(reg, digest)
        except IntegrityError as exc:
            errors.append(str(exc))
    needed = _referenced(reg)
    for hexdigest, users in sorted(needed.items()):
        problem = reg.blobs.problem(hexdigest)
        if problem:
            errors.append(f"blob sha256:{hexdigest} ({users[0]}) is {problem}")
    present = set(reg.blobs.digests())
    orphans = [f"sha256:{h}" for h in sorted(present - needed.keys())]
    orphans += [f"tmp/{p.name}" for p in reg.blobs.temp_files()]
    collected = reg.blobs.collect(set(needed), gc_grace_s) if gc else []
    return VerifyReport(
        checked=len(needed),
        errors=tuple(errors),
        orphans=tuple(orphans),
        collected=tuple(collected),
    )
