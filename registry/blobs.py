"""Content-addressed blob store on a local filesystem.

Layout: ``<root>/sha256/ab/abcdef...`` (the full hex digest, sharded by its first two
characters) and ``<root>/tmp/`` for writes in progress. A blob is written to a temp
file while it is hashed (each byte read once), fsynced, renamed into place, and the
directory fsynced, so a blob that is visible is complete. A temp file or a blob that
no metadata names (left by a killed push) is harmless; ``registry gc`` removes it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import Protocol

from registry.digest import CHUNK_BYTES, Digest
from registry.errors import IntegrityError, StorageFullError

ByteCallback = Callable[[int], None]
Hook = Callable[[], None]
#: The errors that mean "the registry's disk or quota is full", not "this file is bad".
FULL = (errno.ENOSPC, errno.EDQUOT)


class BlobStore(Protocol):
    """What the registry needs from a blob store: a local directory
    (:class:`FileBlobStore`) or an S3 bucket (:class:`registry.s3_blobs.S3BlobStore`)."""

    def put_file(
        self, src: Path, on_bytes: ByteCallback | None = None, before_rename: Hook | None = None
    ) -> tuple[str, int]: ...

    def has(self, hexdigest: str) -> bool: ...

    def read_bytes(self, hexdigest: str) -> bytes: ...

    def copy_out(
        self, hexdigest: str, dest: Path, on_bytes: ByteCallback | None = None
    ) -> None: ...

    def problem(self, hexdigest: str) -> str | None: ...

    def digests(self) -> Iterator[str]: ...

    def temp_files(self) -> Sequence[PurePath]: ...

    def collect(self, keep: set[str], grace_s: float) -> list[str]: ...


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename or a new file) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Every byte of `data` to `fd`: a write may take only part (a pipe, a signal, a
    nearly full disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_hashing(src_fd: int, dst_fd: int, on_bytes: ByteCallback | None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    while n := os.readv(src_fd, [buf]):
        chunk = view[:n]
        digest.update(chunk)
        write_all(dst_fd, chunk)
        size += n
        if on_bytes is not None:
            on_bytes(n)
    return digest.hexdigest(), size


class FileBlobStore:
    """A :class:`BlobStore` in a local directory."""

    def __init__(self, root: Path) -> None:
        # Directories appear with the first write, so a read-only registry opens fine.
        self.root = root
        self.objects = root / "sha256"
        self.tmp = root / "tmp"
        # (st_dev, st_ino) -> hex digest of blobs linked into a write's scratch directory
        # (the registry service's uploads, hashed as they arrived): put_file of such a
        # link stores nothing new and reads nothing (see `linked`).
        self._linked: dict[tuple[int, int], str] = {}

    def path(self, hexdigest: str) -> Path:
        """Where the blob with this hex digest lives."""
        return self.objects / hexdigest[:2] / hexdigest

    @contextlib.contextmanager
    def _full_is_typed(self) -> Iterator[None]:
        """A write that fills the disk raises :class:`StorageFullError`, naming the fix."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            raise StorageFullError(
                f"the registry's storage at {self.root} is full ({exc.strerror}); nothing "
                "was recorded. Free space there (`registry verify --gc` removes blobs that "
                "killed writes left) and run the command again"
            ) from None

    def _temp(self, directory: Path | None = None) -> tuple[int, Path]:
        if not self.tmp.is_dir():
            self.tmp.mkdir(parents=True, exist_ok=True)
            self.objects.mkdir(exist_ok=True)
        if directory is not None:
            directory.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory or self.tmp, prefix="blob-")
        return fd, Path(name)

    def _publish(self, temp: Path, hexdigest: str) -> None:
        final = self.path(hexdigest)
        if final.exists():
            temp.unlink()
            with contextlib.suppress(PermissionError):  # a registry this user does not own
                os.utime(final)  # needed again: its gc grace period starts over (collect)
            return
        shard = final.parent
        if not shard.exists():
            shard.mkdir(exist_ok=True)
            fsync_dir(self.objects)
        os.chmod(temp, 0o444)
        os.replace(temp, final)
        fsync_dir(shard)

    @contextlib.contextmanager
    def linked(self, links: dict[Path, str]) -> Iterator[None]:
        """While the block runs, ``put_file`` of a path in ``links`` (a hard link to the
        blob of the given hex digest, made by the caller) is the blob itself: already
        stored and hashed, so nothing is read or copied again."""
        keys = []
        for path, hexdigest in links.items():
            info = path.stat()
            keys.append((info.st_dev, info.st_ino))
            self._linked[keys[-1]] = hexdigest
        try:
            yield
        finally:
            for key in keys:
                self._linked.pop(key, None)

    def _already_stored(self, src: Path) -> tuple[str, int] | None:
        if not self._linked:
            return None
        info = src.stat()
        hexdigest = self._linked.get((info.st_dev, info.st_ino))
        if hexdigest is None:
            return None
        blob = self.path(hexdigest).stat()
        if (blob.st_dev, blob.st_ino) != (info.st_dev, info.st_ino):
            return None
        return hexdigest, info.st_size

    def put_file(
        self, src: Path, on_bytes: ByteCallback | None = None, before_rename: Hook | None = None
    ) -> tuple[str, int]:
        """Store a file's bytes; return (hex digest, size)."""
        stored = self._already_stored(src)
        if stored is not None:
            if on_bytes is not None:
                on_bytes(stored[1])
            if before_rename is not None:
                before_rename()
            return stored
        with self._full_is_typed():
            fd, temp = self._temp()
            try:
                src_fd = os.open(src, os.O_RDONLY)
                try:
                    hexdigest, size = _copy_hashing(src_fd, fd, on_bytes)
                finally:
                    os.close(src_fd)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                temp.unlink(missing_ok=True)
                raise
            os.close(fd)
            if before_rename is not None:
                before_rename()
            self._publish(temp, hexdigest)
        return hexdigest, size

    @property
    def uploads(self) -> Path:
        """Where the registry service's uploads arrive: its own, so a restarted service
        empties it of what a killed one left (``tmp/`` is shared with local writers)."""
        return self.root / "uploads"

    def writer(self, directory: Path | None = None) -> BlobWriter:
        """A blob written piece by piece (an upload arriving over the network), its temp
        file in ``directory`` (a directory beside ``tmp/``, such as :attr:`uploads`)."""
        with self._full_is_typed():
            fd, temp = self._temp(directory)
        return BlobWriter(self, fd, temp)

    def has(self, hexdigest: str) -> bool:
        return self.path(hexdigest).is_file()

    def read_bytes(self, hexdigest: str) -> bytes:
        """Read a small blob, verifying it."""
        try:
            data = self.path(hexdigest).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"blob {Digest.from_hex(hexdigest)} is missing") from None
        if hashlib.sha256(data).hexdigest() != hexdigest:
            raise IntegrityError(
                f"blob {Digest.from_hex(hexdigest)} is corrupt (its bytes changed)"
            )
        return data

    def copy_out(self, hexdigest: str, dest: Path, on_bytes: ByteCallback | None = None) -> None:
        """Copy a blob to ``dest`` (created), verifying its hash; raise IntegrityError."""
        try:
            src_fd = os.open(self.path(hexdigest), os.O_RDONLY)
        except FileNotFoundError:
            raise IntegrityError(f"blob {Digest.from_hex(hexdigest)} is missing") from None
        try:
            dst_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                actual, _ = _copy_hashing(src_fd, dst_fd, on_bytes)
                os.fsync(dst_fd)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        if actual != hexdigest:
            raise IntegrityError(
                f"blob {Digest.from_hex(hexdigest)} is corrupt (its bytes now hash to "
                f"{Digest.from_hex(actual)}); "
                "run `registry verify` and push the adapter again"
            )

    def problem(self, hexdigest: str) -> str | None:
        """None if the blob is present and intact, else what is wrong with it."""
        path = self.path(hexdigest)
        if not path.is_file():
            return "missing"
        digest = hashlib.sha256()
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(CHUNK_BYTES):
                digest.update(chunk)
        if digest.hexdigest() != hexdigest:
            return f"corrupt (hashes to {Digest.from_hex(digest.hexdigest())})"
        return None

    def digests(self) -> Iterator[str]:
        """Every blob present (hex digests)."""
        if not self.objects.is_dir():
            return
        for shard in sorted(self.objects.iterdir()):
            if shard.is_dir():
                for blob in sorted(shard.iterdir()):
                    yield blob.name

    def temp_files(self) -> list[Path]:
        """Temp files of writes that never finished (or are in progress)."""
        return sorted(self.tmp.iterdir()) if self.tmp.is_dir() else []

    def collect(self, keep: set[str], grace_s: float) -> list[str]:
        """Delete orphan blobs and temp files older than ``grace_s``; return what went."""
        cutoff = time.time() - grace_s
        removed: list[str] = []
        for hexdigest in list(self.digests()):
            path = self.path(hexdigest)
            if hexdigest not in keep and path.stat().st_mtime <= cutoff:
                path.unlink(missing_ok=True)
                removed.append(str(Digest.from_hex(hexdigest)))
        for temp in self.temp_files():
            with contextlib.suppress(FileNotFoundError):
                if temp.stat().st_mtime <= cutoff:
                    temp.unlink()
                    removed.append(f"tmp/{temp.name}")
        return removed


class BlobWriter:
    """A temp file that becomes a blob only if its bytes hash to what was expected.

    :meth:`write` pieces, then :meth:`commit` (fsync, check, rename) or :meth:`abort`
    (the temp file goes; nothing is stored). A process killed in between leaves a temp
    file that ``registry gc`` collects after its grace period.
    """

    def __init__(self, store: FileBlobStore, fd: int, temp: Path) -> None:
        self._store, self._fd, self._temp = store, fd, temp
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray) -> None:
        with self._store._full_is_typed():
            write_all(self._fd, data)
        self._hash.update(data)
        self.size += len(data)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._temp.unlink(missing_ok=True)

    def commit(self, expected: str | None = None) -> str:
        """Store the bytes; their hex digest. IntegrityError (nothing stored) when they do
        not hash to ``expected``."""
        hexdigest = self._hash.hexdigest()
        if expected is not None and hexdigest != expected:
            self.abort()
            raise IntegrityError(
                f"the bytes received hash to {Digest.from_hex(hexdigest)}, not "
                f"{Digest.from_hex(expected)}; nothing was stored (send the file again)"
            )
        try:
            with self._store._full_is_typed():
                os.fsync(self._fd)
                os.close(self._fd)
                self._store._publish(self._temp, hexdigest)
        except BaseException:
            self.abort()
            raise
        return hexdigest
