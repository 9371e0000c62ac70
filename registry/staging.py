"""Storing the files of a write as blobs, before any metadata names them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from registry.blobs import BlobStore
from registry.digest import ManifestEntry
from registry.dirscan import ScannedFile
from registry.errors import SourceChangedError
from registry.progress import byte_progress, want_progress


def store_files(
    blobs: BlobStore,
    files: Sequence[ScannedFile],
    desc: str,
    *,
    progress: bool | None,
    progress_min_bytes: int,
    first_temp_written: Callable[[], None] | None = None,
) -> tuple[ManifestEntry, ...]:
    """Hash-and-copy each file into the blob store; the manifest entries, in order."""
    total = sum(f.size for f in files)
    show = want_progress(progress, total, progress_min_bytes)
    entries = []
    with byte_progress(total, desc, show) as on_bytes:
        for index, f in enumerate(files):
            hook = first_temp_written if index == 0 else None
            hexdigest, size = blobs.put_file(f.path, on_bytes, before_rename=hook)
            if size != f.size:
                raise SourceChangedError(
                    f"{f.relpath} changed size while it was being stored; nothing was "
                    "recorded, so push again once whatever writes it has finished"
                )
            entries.append(ManifestEntry(f.relpath, size, hexdigest))
    return tuple(entries)
