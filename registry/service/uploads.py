"""Where the registry service's blobs go in and come out, behind one narrow protocol:
:class:`ServedBlobs`. The routes (:mod:`.app`) never ask which kind of store a registry
has; :func:`served_blobs` picks the implementation from the registry's blob store, as
:mod:`registry.location` picks a registry by its location's scheme.

- :class:`~registry.service.uploads_directory.DirectoryBlobs` (``blobs/`` on the
  registry's disk): an upload lands beside the blobs and is renamed into place; a write
  lays its files out as hard links to them.
- :class:`~registry.service.uploads_s3.S3Blobs` (an S3-compatible bucket): an upload is
  spooled to this server's disk while it is hashed, then streamed to the bucket
  (multipart) under its digest before any record names it; a write lays its files out by
  copying them back (each byte verified); a download is a presigned URL (the server
  carries no bytes) or, when presigning is off, the object streamed through.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

from starlette.responses import Response

from registry.blobs import FileBlobStore
from registry.local import LocalRegistry
from registry.prepare import FileRef
from registry.settings import RegistrySettings


class Upload(Protocol):
    """One blob arriving piece by piece: :meth:`write`, then :meth:`commit` or
    :meth:`abort` (nothing is stored)."""

    size: int

    def write(self, data: bytes | bytearray) -> None: ...

    def commit(self, expected: str | None = None) -> str:
        """Store the bytes, return their hex digest; IntegrityError (nothing stored) when
        they do not hash to ``expected``."""
        ...

    def abort(self) -> None: ...


class ServedBlobs(Protocol):
    """What the service needs from where the registry's blobs live."""

    def leftovers(self) -> tuple[Path, ...]:
        """What a killed server leaves on this host (removed when no server is present)."""
        ...

    def check_room(self, size: int) -> None:
        """StorageFullError now if an upload of ``size`` bytes cannot be taken in."""
        ...

    def writer(self) -> Upload: ...

    def lay_out(self, ref: FileRef, out: Path) -> bool:
        """Make ``out`` (new) hold the stored blob ``ref`` names, its size checked; True
        when ``out`` is known to be the blob's bytes (a path :meth:`linked` may name).
        BadRequestError when that blob was never uploaded."""
        ...

    def linked(self, links: dict[Path, str]) -> contextlib.AbstractContextManager[None]:
        """While the block runs, storing a path in ``links`` stores nothing again."""
        ...

    def download(self, hexdigest: str, via_server: bool) -> tuple[Response, int]:
        """The blob's bytes, or where to fetch them (unless ``via_server``), and how many
        bytes this server sends; RefNotFoundError when the blob is absent."""
        ...


def served_blobs(reg: LocalRegistry, settings: RegistrySettings) -> ServedBlobs:
    """The :class:`ServedBlobs` of ``reg``'s blob store."""
    if isinstance(reg.blobs, FileBlobStore):
        from registry.service.uploads_directory import DirectoryBlobs

        return DirectoryBlobs(reg.blobs)
    from registry.s3_blobs import S3BlobStore
    from registry.service.uploads_s3 import S3Blobs

    assert isinstance(reg.blobs, S3BlobStore), type(reg.blobs)
    return S3Blobs(reg.blobs, reg.root / "incoming", settings.presign_s)
