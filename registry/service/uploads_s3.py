"""The service's blobs in an S3-compatible bucket (:class:`~registry.s3_blobs.S3BlobStore`).

**Uploads.** An upload is spooled to this server's disk (``<registry>/incoming/uploads/``)
while it is hashed, and only if it hashes to the digest the client named is it sent to
the bucket (:meth:`S3BlobStore.put_file`: one ``PutObject`` with the store checking the
sha256, or a multipart upload to ``tmp/`` copied server-side to the digest key), so an
object appears under a digest before any record names it, and the spool file goes. A
killed server leaves a spool file (removed when a server starts with no other present)
or a ``tmp/`` object or unfinished multipart upload in the bucket (``registry gc``).

**Writes** that name uploaded files lay each one out in the write's scratch directory:
the upload's spool file, kept in ``incoming/uploads/ready/<hex>`` once it reached the
bucket, is moved there (one write takes it; one no write takes within an hour is
dropped), else the object is copied back out of the bucket, every byte verified (the
upload reached another server of the same registry, or another write took it). The
registry then validates the files as on a directory, and storing them sends nothing
again (:meth:`S3BlobStore.linked`).

**Downloads.** With ``REGISTRY_PRESIGN_S`` above 0 (the default, 300), ``GET
/v1/blobs/{digest}`` answers ``307`` to a presigned URL of the object, valid that many
seconds: the client fetches the bytes from the store and verifies them itself, and the
server carries none. ``?via=server`` (a client that cannot reach the store) or
``REGISTRY_PRESIGN_S=0`` streams the object through the server instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from starlette.responses import RedirectResponse, Response, StreamingResponse

from registry import errors as e
from registry.blobs import FULL, write_all
from registry.digest import Digest
from registry.prepare import FileRef
from registry.s3_blobs import S3BlobStore

#: How long an upload's spool file waits in ``ready/`` for the write that names it.
READY_S = 3600.0


class SpooledUpload:
    """An upload spooled to a local temp file while hashed, sent to the bucket on
    :meth:`commit`, then kept in ``ready/<hex>`` for the write that names it (the temp
    file goes if anything fails)."""

    def __init__(self, store: S3BlobStore, spool: Path, ready: Path) -> None:
        spool.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=spool, prefix="blob-")
        self._store, self._fd, self._temp = store, fd, Path(name)
        self._ready = ready
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray) -> None:
        try:
            write_all(self._fd, data)
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            raise e.StorageFullError(
                f"the registry service's spool ({self._temp.parent}) cannot take the upload "
                f"({exc.strerror or exc}); nothing was stored"
            ) from None
        self._hash.update(data)
        self.size += len(data)

    def _close(self) -> None:
        """Close the spool file once (a second close could hit a descriptor another
        thread has since opened under the same number)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)

    def abort(self) -> None:
        self._close()
        self._temp.unlink(missing_ok=True)

    def commit(self, expected: str | None = None) -> str:
        hexdigest = self._hash.hexdigest()
        try:
            if expected is not None and hexdigest != expected:
                raise e.IntegrityError(
                    f"the bytes received hash to {Digest.from_hex(hexdigest)}, not "
                    f"{Digest.from_hex(expected)}; nothing was stored (send the file again)"
                )
            self._close()
            sent, _ = self._store.put_file(self._temp)  # hashed again as it is sent
            if sent != hexdigest:  # the spool file changed on this disk: store nothing
                raise e.IntegrityError(
                    f"the upload's spool file changed before it reached the object store "
                    f"({Digest.from_hex(sent)}, not {Digest.from_hex(hexdigest)}); send it again"
                )
            self._ready.mkdir(exist_ok=True)
            os.replace(self._temp, self._ready / hexdigest)  # same bytes if one was there
        finally:
            self.abort()
        return hexdigest


class S3Blobs:
    """:class:`~registry.service.uploads.ServedBlobs` over an :class:`S3BlobStore`."""

    def __init__(self, store: S3BlobStore, incoming: Path, presign_s: int) -> None:
        self.store = store
        self.spool = incoming / "uploads"
        self.ready = self.spool / "ready"
        self.presign_s = presign_s

    def leftovers(self) -> tuple[Path, ...]:
        return (self.spool,)

    def check_room(self, size: int) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.spool).free
        if size > free:
            raise e.StorageFullError(
                f"an upload of {size} bytes does not fit in the {free} bytes free on the "
                f"registry service's spool ({self.spool}); nothing was stored"
            )

    def writer(self) -> SpooledUpload:
        self._sweep()
        return SpooledUpload(self.store, self.spool, self.ready)

    def _sweep(self) -> None:
        """Drop ready uploads no write took within :data:`READY_S` (a client that gave
        up between its uploads and its write); the bucket still has them."""
        cutoff = time.time() - READY_S
        with contextlib.suppress(FileNotFoundError):
            for path in self.ready.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()

    def lay_out(self, ref: FileRef, out: Path) -> bool:
        size = self.store.size(Digest(ref.digest).hex)
        if size is None:
            raise e.BadRequestError(
                f"{ref.path} ({ref.digest}) was not uploaded: POST /v1/blobs first"
            )
        if size != ref.size:
            raise e.BadRequestError(f"{ref.path} is {size} bytes, not {ref.size}")
        try:  # the upload's own spool file, hashed as it arrived here: taken by one write
            os.rename(self.ready / Digest(ref.digest).hex, out)
            if out.stat().st_size == size:
                return True
            out.unlink()
        except FileNotFoundError:
            pass  # uploaded to another server, taken by another write, or swept
        self.store.copy_out(Digest(ref.digest).hex, out)  # verified: IntegrityError if not
        return True

    def linked(self, links: dict[Path, str]) -> contextlib.AbstractContextManager[None]:
        return self.store.linked(links)

    def download(self, hexdigest: str, via_server: bool) -> tuple[Response, int]:
        size = self.store.size(hexdigest)
        if size is None:
            raise e.RefNotFoundError(f"no blob {Digest.from_hex(hexdigest)} in the registry")
        if self.presign_s > 0 and not via_server:
            url = self.store.presigned_url(hexdigest, self.presign_s)
            return RedirectResponse(url, status_code=307), 0
        response = StreamingResponse(
            self.store.chunks(hexdigest),
            media_type="application/octet-stream",
            headers={"content-length": str(size)},
        )
        return response, size
