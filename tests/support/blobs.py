"""Blob helpers only tests need: store a byte string, hash a file the plain way."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from registry.blobs import BlobStore


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
