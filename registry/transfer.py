"""Getting bytes back out: ``pull`` (verified, atomic) and ``verify`` (re-hash, orphans)."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from registry.blobs import ByteCallback, fsync_dir
from registry.deps import Deps
from registry.digest import Digest, ManifestEntry, manifest_digest, parse_manifest, sha256_bytes
from registry.errors import (
    BadRequestError,
    DestinationExistsError,
    DestinationUnwritableError,
    IntegrityError,
    RefNotFoundError,
)
from registry.progress import byte_progress, want_progress
from registry.records import GcReport, Resolved, VerifyReport
from registry.sql_store import SqlStore


def _manifest(deps: Deps, digest: Digest) -> tuple[ManifestEntry, ...]:
    body = deps.store.manifest_body(digest)
    if body is None:
        raise IntegrityError(f"the manifest of {digest} is missing from the database")
    if Digest.from_hex(sha256_bytes(body.encode())) != digest:
        raise IntegrityError(f"the manifest of {digest} no longer hashes to its digest")
    entries = parse_manifest(body)
    if manifest_digest(entries) != digest:
        raise IntegrityError(f"the manifest of {digest} is not canonical")
    return entries


def entries(deps: Deps, target: Resolved) -> tuple[ManifestEntry, ...]:
    if target.kind != "dataset":
        return _manifest(deps, target.digest)
    entry = deps.store.dataset_file(target.name)
    if entry is None:
        raise RefNotFoundError(f"dataset {target.name} is gone")
    return (entry,)


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise DestinationExistsError(f"{dest} exists and is not a directory; pick another DEST")
    if dest.is_dir() and any(dest.iterdir()):
        raise DestinationExistsError(f"{dest} is not empty; pull into a new or empty directory")


#: Copy one blob (hex digest) to a new file, verifying it; raise IntegrityError.
CopyOut = Callable[[str, Path, ByteCallback | None], None]


def pull(
    deps: Deps, target: Resolved, label: str, dest: Path, *, progress: bool | None = False
) -> Path:
    """Rebuild ``target``'s files at ``dest``: every file verified, then one rename."""
    _check_dest(dest)
    found = entries(deps, target)
    show = want_progress(progress, sum(e.size for e in found), deps.settings.progress_min_bytes)
    return materialise(found, deps.blobs.copy_out, label, dest, show=show)


def materialise(
    found: Sequence[ManifestEntry], copy_out: CopyOut, label: str, dest: Path, *, show: bool
) -> Path:
    """Write ``found`` at ``dest`` from ``copy_out`` (a local blob store, or downloads
    from a registry service): into a temp directory beside it, every file verified, then
    one rename, so ``dest`` is either complete or absent."""
    _check_dest(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.pull-", dir=dest.parent))
    except OSError as exc:
        blocker = next((p for p in dest.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file" if blocker is not None else (exc.strerror or str(exc))
        raise DestinationUnwritableError(
            f"cannot create {dest}: {why}; pull into a directory you can write"
        ) from None
    total = sum(e.size for e in found)
    try:
        with byte_progress(total, f"pull {label}", show) as on_bytes:
            for entry in found:
                relpath = PurePosixPath(entry.path)
                if relpath.is_absolute() or ".." in relpath.parts:
                    raise IntegrityError(f"unsafe path {entry.path!r} in manifest")
                out = temp.joinpath(*relpath.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                copy_out(entry.sha256, out, on_bytes)
                if out.stat().st_size != entry.size:
                    raise IntegrityError(f"{entry.path} has the wrong size")
        for directory in sorted({p for p in temp.rglob("*") if p.is_dir()} | {temp}):
            fsync_dir(directory)
        _check_dest(dest)
        if dest.is_dir():
            dest.rmdir()
        os.rename(temp, dest)
        fsync_dir(dest.parent)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise DestinationUnwritableError(
            f"cannot write {dest}: {exc.strerror or exc}; pull into a directory you can write "
            "(nothing was left behind)"
        ) from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return dest


def _referenced(deps: Deps) -> dict[str, list[str]]:
    """blob hex digest -> the records/manifests that need it."""
    return referenced_blobs(deps.store)


def referenced_blobs(store: SqlStore) -> dict[str, list[str]]:
    """blob hex digest -> the records/manifests of ``store`` that need it."""
    needed: dict[str, list[str]] = {}
    for digest, body in store.manifests():
        for entry in parse_manifest(body):
            needed.setdefault(entry.sha256, []).append(f"{digest}:{entry.path}")
    for name, hexdigest in store.dataset_blobs():
        needed.setdefault(hexdigest, []).append(f"dataset {name}")
    return needed


def verify(
    deps: Deps, target: Resolved | None, label: str, *, gc: bool, gc_grace_s: float
) -> VerifyReport:
    """Re-hash every blob that metadata names (or those of ``target``); list orphans."""
    errors: list[str] = []
    if target is not None:
        try:
            listed = entries(deps, target)
        except IntegrityError as exc:
            return VerifyReport(checked=0, errors=(str(exc),))
        for entry in listed:
            problem = deps.blobs.problem(entry.sha256)
            if problem:
                where = Digest.from_hex(entry.sha256)
                errors.append(f"{label}: {entry.path} ({where}) is {problem}")
        return VerifyReport(checked=len(listed), errors=tuple(errors))
    for digest, _ in deps.store.manifests():
        try:
            _manifest(deps, digest)
        except IntegrityError as exc:
            errors.append(str(exc))
    needed = _referenced(deps)
    for hexdigest, users in sorted(needed.items()):
        problem = deps.blobs.problem(hexdigest)
        if problem:
            errors.append(f"blob {Digest.from_hex(hexdigest)} ({users[0]}) is {problem}")
    present = set(deps.blobs.digests())
    orphans = [str(Digest.from_hex(h)) for h in sorted(present - needed.keys())]
    orphans += [f"tmp/{p.name}" for p in deps.blobs.temp_files()]
    collected = deps.blobs.collect(set(needed), gc_grace_s) if gc else []
    return VerifyReport(
        checked=len(needed),
        errors=tuple(errors),
        orphans=tuple(orphans),
        collected=tuple(collected),
    )


def collect_garbage(deps: Deps, grace_s: float) -> GcReport:
    """Remove what no record references (blobs, temp files of killed writes) once older
    than ``grace_s`` on the blob store's own clock; report what stayed for being young.

    The references are read before the store is listed, so a blob a write stores after
    that read is younger than any sane grace period and stays; the grace period must be
    longer than the longest write (its blobs are stored before its record commits)."""
    if not math.isfinite(grace_s) or grace_s < 0:
        raise BadRequestError(f"the grace period must be 0 s or more, not {grace_s!r}")
    needed = _referenced(deps)
    orphans = [str(Digest.from_hex(h)) for h in sorted(set(deps.blobs.digests()) - needed.keys())]
    orphans += [f"tmp/{p.name}" for p in deps.blobs.temp_files()]
    removed = deps.blobs.collect(set(needed), grace_s)
    gone = set(removed)
    return GcReport(removed=tuple(removed), kept=tuple(o for o in orphans if o not in gone))
