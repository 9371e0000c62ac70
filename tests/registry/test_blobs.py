from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from registry.blobs import FileBlobStore
from registry.errors import IntegrityError
from tests.support.blobs import put_bytes


def test_put_file_is_content_addressed(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    src = tmp_path / "src"
    src.write_bytes(b"hello" * 1000)
    seen: list[int] = []
    hexdigest, size = store.put_file(src, seen.append)
    assert hexdigest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert size == 5000 and sum(seen) == 5000
    assert store.path(hexdigest) == tmp_path / "blobs" / "sha256" / hexdigest[:2] / hexdigest
    assert store.put_file(src) == (hexdigest, size)
    assert list(store.digests()) == [hexdigest]
    assert store.temp_files() == []


def test_copy_out_verifies(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    hexdigest = put_bytes(store, b"payload")
    store.copy_out(hexdigest, tmp_path / "ok")
    assert (tmp_path / "ok").read_bytes() == b"payload"
    blob = store.path(hexdigest)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"tampered")
    assert store.problem(hexdigest) is not None
    with pytest.raises(IntegrityError, match="corrupt"):
        store.copy_out(hexdigest, tmp_path / "bad")
    with pytest.raises(IntegrityError, match="missing"):
        store.copy_out("0" * 64, tmp_path / "missing")


def test_collect_removes_orphans_and_temps(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    keep = put_bytes(store, b"keep")
    orphan = put_bytes(store, b"orphan")
    (store.tmp / "blob-leftover").write_bytes(b"half")
    assert store.collect({keep}, grace_s=3600) == []
    removed = store.collect({keep}, grace_s=0)
    assert f"sha256:{orphan}" in removed and "tmp/blob-leftover" in removed
    assert list(store.digests()) == [keep]
