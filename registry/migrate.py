"""``registry migrate --to DIR [--blobs s3://BUCKET/PREFIX]``: copy a registry directory,
every record and every blob, to a new location (a directory whose blobs are on its disk
or in S3), so a registry can move to object storage (and, later, to PostgreSQL).

Why a copy of the records, not a replay through the :class:`~registry.protocol.Registry`
protocol: a replay would push each version again and so could not keep what the
protocol never writes twice: version numbers across removed versions, who wrote each
record and when, the event log, rollout histories and leases, quarantine reasons. A
migrated registry must read exactly as the old one did.

Order, so a migration killed at any point leaves nothing that looks like a registry:

1. the records are snapshotted (SQLite's online backup: one consistent read, while the
   source keeps serving) into ``<dest>/.migrate/registry.db``;
2. every blob that snapshot references is copied to the destination's blob store, each
   verified on the way (read back against its digest, hashed again as it is stored);
   blobs already there are skipped, so running it again resumes;
3. the snapshot is renamed to ``<dest>/registry.db`` (metadata last, as for a push);
4. the new registry is opened and verified (every blob re-hashed where it now lives).

A write to the source after step 1 is not carried over: stop writers first (or run it
again into a new destination).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from registry.blob_location import BLOBS_FILE, open_blobs, record_blobs
from registry.blobs import BlobStore, FileBlobStore, fsync_dir
from registry.deps import StepHook
from registry.digest import Digest
from registry.errors import DestinationExistsError, IntegrityError, UnsupportedLocationError
from registry.local import LocalRegistry
from registry.location import DB_NAME, open_local
from registry.records import VerifyReport
from registry.settings import RegistrySettings
from registry.sql_store import SqlStore
from registry.sql_store.sqlite import SqliteConnection
from registry.transfer import referenced_blobs

WORK = ".migrate"


@dataclass(frozen=True, slots=True)
class MigrateReport:
    """What a migration copied, found already there, and the destination's verify."""

    copied: int
    copied_bytes: int
    present: int
    verify: VerifyReport


def _check_destination(dest: Path, source: Path) -> None:
    if dest.resolve() == source.resolve():
        raise DestinationExistsError(f"{dest} is the registry being migrated; pick a new path")
    if (dest / DB_NAME).exists():
        raise DestinationExistsError(
            f"{dest} already holds a registry; migrate into a new or empty directory"
        )
    leftovers = {BLOBS_FILE, WORK, "blobs"}  # what an interrupted migration leaves
    if dest.exists() and (
        not dest.is_dir() or any(p.name not in leftovers for p in dest.iterdir())
    ):
        raise DestinationExistsError(
            f"{dest} is not a new or empty directory; migrate into one (a migration that "
            "was interrupted may be run again into the same path)"
        )


def _snapshot(source: LocalRegistry, into: Path) -> None:
    """A consistent copy of the source's records (the online backup takes one read)."""
    into.unlink(missing_ok=True)
    target = sqlite3.connect(into)
    try:
        conn = source.store.conn
        if not isinstance(conn, SqliteConnection):
            raise UnsupportedLocationError(
                f"registry migrate copies from a registry directory; {source.location} keeps "
                "its records in PostgreSQL (back it up with pg_dump instead)"
            )
        with source.store.lock:
            conn.raw.backup(target)
        target.commit()
    finally:
        target.close()
    with open(into, "rb") as fh:
        os.fsync(fh.fileno())


def _copy_blob(source: BlobStore, dest: BlobStore, hexdigest: str, scratch: Path) -> int:
    """Copy one blob, verified both ways; its size."""
    if isinstance(source, FileBlobStore):
        path = source.path(hexdigest)  # the file itself: read once, hashed as it is stored
    else:
        path = scratch / hexdigest
        path.unlink(missing_ok=True)
        source.copy_out(hexdigest, path)  # raises IntegrityError unless it hashes right
    try:
        if not path.is_file():
            raise IntegrityError(f"blob {Digest.from_hex(hexdigest)} is missing in the source")
        stored, size = dest.put_file(path)
    finally:
        if path.parent == scratch:
            path.unlink(missing_ok=True)
    if stored != hexdigest:
        raise IntegrityError(
            f"blob {Digest.from_hex(hexdigest)} is corrupt in the source (it hashes to "
            f"{Digest.from_hex(stored)}); run `registry verify` there, nothing was migrated"
        )
    return size


def _copy_blobs(
    source: LocalRegistry,
    snapshot: Path,
    target: BlobStore,
    work: Path,
    *,
    settings: RegistrySettings,
    on_blob: Callable[[int, int], None] | None,
) -> tuple[int, int, int]:
    """Copy every blob the ``snapshot`` references into ``target`` (skipping those already
    there); how many were copied, their bytes, and how many were there."""
    copied = copied_bytes = present = 0
    scratch = Path(tempfile.mkdtemp(prefix="blobs-", dir=work))
    try:
        records = SqlStore.open(
            snapshot, busy_timeout_s=settings.busy_timeout_s, create=False, read_only=True
        )
        try:
            needed = sorted(referenced_blobs(records))
        finally:
            records.close()
        for done, hexdigest in enumerate(needed, start=1):
            if target.has(hexdigest):
                present += 1
            else:
                copied_bytes += _copy_blob(source.blobs, target, hexdigest, scratch)
                copied += 1
            if on_blob is not None:
                on_blob(done, len(needed))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return copied, copied_bytes, present


def migrate(
    source: LocalRegistry,
    dest: Path,
    *,
    blobs: str | None = None,
    settings: RegistrySettings | None = None,
    on_blob: Callable[[int, int], None] | None = None,
) -> MigrateReport:
    """Copy ``source`` to a new registry directory ``dest`` (its blobs in ``blobs``, an
    ``s3://`` URL, else on its disk); see the module docstring. ``on_blob(done, total)``
    follows the blobs."""
    settings = settings if settings is not None else RegistrySettings()
    _check_destination(dest, source.root)
    if blobs is not None:
        record_blobs(dest, blobs)  # checks the bucket answers, before anything is copied
    elif (dest / BLOBS_FILE).exists():
        raise UnsupportedLocationError(
            f"{dest} was begun as a migration with blobs in S3 (its {BLOBS_FILE}); give the "
            "same --blobs, or pick a new path"
        )
    work = dest / WORK
    work.mkdir(parents=True, exist_ok=True)
    snapshot = work / DB_NAME
    _snapshot(source, snapshot)
    target_blobs = open_blobs(dest)
    copied, copied_bytes, present = _copy_blobs(
        source, snapshot, target_blobs, work, settings=settings, on_blob=on_blob
    )
    for leftover in work.glob(f"{DB_NAME}-*"):  # a read-only open's -wal / -shm
        leftover.unlink(missing_ok=True)
    os.replace(snapshot, dest / DB_NAME)  # the records appear last, all at once
    fsync_dir(dest)
    with contextlib.suppress(OSError):
        work.rmdir()
    with open_local(dest, settings=settings, create=False) as migrated:
        report = migrated.verify()
    return MigrateReport(copied, copied_bytes, present, report)


def migrate_to_store(
    source: LocalRegistry,
    store_url: str,
    *,
    blobs: str | None,
    settings: RegistrySettings | None = None,
    on_blob: Callable[[int, int], None] | None = None,
    on_step: StepHook | None = None,
) -> MigrateReport:
    """Copy ``source`` into the empty PostgreSQL database ``store_url``, its blobs into
    ``blobs`` (``s3://BUCKET/PREFIX``, required); see the module docstring. ``on_step``
    is told ``blobs-copied`` and (inside the records' transaction) ``records-loaded``."""
    from registry.migrate_records import check_empty, load  # psycopg: only here
    from registry.server_location import blob_store_at, blobs_location, check_new_blobs
    from registry.sql_store.postgres import PostgresConnection

    settings = settings if settings is not None else RegistrySettings()
    if blobs is None:
        raise UnsupportedLocationError(
            "a registry in PostgreSQL needs somewhere for its blobs: add --blobs s3://BUCKET/PREFIX"
        )
    wanted = blobs_location(blobs)
    conn = PostgresConnection(store_url)
    try:
        check_empty(conn, wanted)  # before any byte is copied
        check_new_blobs(wanted)  # a typo in the bucket or endpoint fails here
        target_blobs, _ = blob_store_at(wanted)
        work = Path(tempfile.mkdtemp(prefix="loraport-migrate-"))
        try:
            snapshot = work / DB_NAME
            _snapshot(source, snapshot)
            # A private copy: brought to this loraport's schema as a writable open would
            # (a newer one is refused), so its tables are the ones the database gets.
            SqlStore.open(
                snapshot, busy_timeout_s=settings.busy_timeout_s, create=False, read_only=False
            ).close()
            copied, copied_bytes, present = _copy_blobs(
                source, snapshot, target_blobs, work, settings=settings, on_blob=on_blob
            )
            if on_step is not None:
                on_step("blobs-copied")
            records = sqlite3.connect(snapshot)
            try:
                load(records, conn, blobs=wanted, on_step=on_step)  # the records, all at once
            finally:
                records.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        conn.close()
    from registry.server_location import open_store

    with open_store(store_url, settings=settings) as migrated:
        report = migrated.verify()
    return MigrateReport(copied, copied_bytes, present, report)
