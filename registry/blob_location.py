"""Where a registry directory keeps its blobs: ``blobs/`` inside it (the default), or an
S3-compatible bucket chosen once at ``registry init --blobs s3://BUCKET/PREFIX``.

The choice is recorded in ``<registry>/blobs.json`` (``{"blobs": "s3://..."}``), written
before the database, so every later open of the directory uses the same store and a
registry never splits its blobs between two places. No file means ``blobs/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from registry.blobs import BlobStore, FileBlobStore, fsync_dir
from registry.errors import NotARegistryError, UnsupportedLocationError

BLOBS_FILE = "blobs.json"


def recorded_blobs(root: Path) -> str | None:
    """The ``s3://`` URL a registry directory keeps its blobs at; None for ``blobs/``."""
    try:
        text = (root / BLOBS_FILE).read_text()
    except FileNotFoundError:
        return None
    try:
        url = json.loads(text)["blobs"]
    except (ValueError, KeyError, TypeError):
        raise NotARegistryError(
            f"{root / BLOBS_FILE} is damaged: expected {{'blobs': URL}}"
        ) from None
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise NotARegistryError(f"{root / BLOBS_FILE} names no s3:// location: {url!r}")
    return url


def record_blobs(root: Path, url: str) -> None:
    """Record (atomically, fsynced) that the registry at ``root`` keeps its blobs at
    ``url``; refuse a registry that already keeps them elsewhere."""
    from registry.s3_blobs import S3BlobStore, S3Location

    url = str(S3Location.parse(url))
    current = recorded_blobs(root)
    if current == url:
        return
    if current is not None or (root / "registry.db").exists():
        where = current or f"{root / 'blobs'}"
        raise UnsupportedLocationError(
            f"the registry at {root} keeps its blobs at {where}; they cannot move to {url} "
            "(create a new registry with `registry init --blobs URL`)"
        )
    if root.is_dir() and any(root.iterdir()):
        raise NotARegistryError(
            f"{root} is a non-empty directory without a registry; a registry is created "
            "only in a new or empty directory, so pick another path"
        )
    S3BlobStore(url).check()  # a typo in the bucket or the endpoint fails here, not later
    root.mkdir(parents=True, exist_ok=True)
    temp = root / f".{BLOBS_FILE}.tmp"
    with open(temp, "w") as fh:
        json.dump({"blobs": url}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, root / BLOBS_FILE)
    fsync_dir(root)


def open_blobs(root: Path) -> BlobStore:
    """The blob store of the registry directory at ``root``."""
    url = recorded_blobs(root)
    if url is None:
        return FileBlobStore(root / "blobs")
    from registry.s3_blobs import S3BlobStore  # boto3 is loaded only for an S3 registry

    return S3BlobStore(url)
