"""Content digests: files, directory manifests and their canonical JSON.

A directory's digest is ``sha256`` over the canonical JSON of its manifest, the list
of ``{"path", "size", "sha256"}`` for every file sorted by relative POSIX path. Refs
print digests as ``sha256:<hex>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from registry.errors import InvalidRefError

#: Every digest the registry prints or accepts starts with this (the only algorithm).
DIGEST_PREFIX = "sha256:"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

#: Read and hash in chunks this large (large enough that Python overhead disappears).
CHUNK_BYTES = 4 * 2**20


class Digest(str):
    """``sha256:<64 lower-case hex>``, checked when made; the one home of the prefix.

    A ``str``, so records that hold one print, compare and serialise exactly as before.
    """

    __slots__ = ()

    def __new__(cls, text: str) -> Digest:
        if not isinstance(text, str) or not _DIGEST.fullmatch(text):
            raise InvalidRefError(
                f"invalid digest {text!r}: expected sha256:<64 lower-case hex digits>"
            )
        return super().__new__(cls, text)

    @classmethod
    def from_hex(cls, hexdigest: str) -> Digest:
        """``abc...`` -> ``sha256:abc...``."""
        return cls(DIGEST_PREFIX + hexdigest)

    @property
    def hex(self) -> str:
        """The 64 hex digits, without the prefix (blob file names, cache directories)."""
        return self[len(DIGEST_PREFIX) :]

    @property
    def short(self) -> str:
        """``sha256:`` plus the first 12 hex digits (tables)."""
        return self[: len(DIGEST_PREFIX) + 12]


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file of a directory: relative POSIX path, size in bytes, sha256 hex."""

    path: str
    size: int
    sha256: str


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sort_manifest(entries: Iterable[ManifestEntry]) -> tuple[ManifestEntry, ...]:
    """Entries sorted by path (the canonical order)."""
    return tuple(sorted(entries, key=lambda e: e.path))


def manifest_json(entries: Sequence[ManifestEntry]) -> bytes:
    """The canonical JSON bytes a manifest digest is computed over."""
    return canonical_json(
        [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in sort_manifest(entries)]
    )


def manifest_digest(entries: Sequence[ManifestEntry]) -> Digest:
    """``sha256:<hex>`` of a directory described by ``entries``."""
    return Digest.from_hex(sha256_bytes(manifest_json(entries)))


def parse_manifest(data: str | bytes) -> tuple[ManifestEntry, ...]:
    """Inverse of :func:`manifest_json`."""
    rows = json.loads(data)
    return tuple(
        ManifestEntry(path=str(r["path"]), size=int(r["size"]), sha256=str(r["sha256"]))
        for r in rows
    )
