"""Blob helpers only tests need: store a byte string, hash a file the plain way, and
damage a stored blob from outside the registry (on a disk or in an S3 bucket)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from registry.blobs import BlobStore, FileBlobStore
from registry.s3_blobs import S3BlobStore, s3_client


def put_bytes(store: BlobStore, data: bytes) -> str:
    """Store ``data`` as a blob (through the store's one write path); its hex digest."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "blob"
        src.write_bytes(data)
        hexdigest, _ = store.put_file(src)
    return hexdigest


def hash_file(path: Path) -> tuple[str, int]:
    """Hex sha256 and size of a file, computed independently of the registry's code."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest(), path.stat().st_size


def overwrite_blob(store: BlobStore, hexdigest: str, data: bytes) -> None:
    """Replace the stored bytes of blob ``hexdigest`` with ``data``, around the store."""
    if isinstance(store, FileBlobStore):
        store.path(hexdigest).chmod(0o644)
        store.path(hexdigest).write_bytes(data)
    elif isinstance(store, S3BlobStore):
        s3_client().put_object(Bucket=store.bucket, Key=store.key(hexdigest), Body=data)
    else:
        raise TypeError(f"no way to damage a {type(store).__name__}")


def delete_blob(store: BlobStore, hexdigest: str) -> None:
    """Remove blob ``hexdigest`` from the store, around the store."""
    if isinstance(store, FileBlobStore):
        store.path(hexdigest).unlink()
    elif isinstance(store, S3BlobStore):
        s3_client().delete_object(Bucket=store.bucket, Key=store.key(hexdigest))
    else:
        raise TypeError(f"no way to damage a {type(store).__name__}")
