"""What a refused write may leave behind, on a directory and through the service."""

from __future__ import annotations

from registry.local import LocalRegistry
from registry.protocol import Registry


def assert_nothing_kept(reg: Registry, local: LocalRegistry, kind: str, blobs: list[str]) -> None:
    """A refused push kept nothing. On a directory it wrote no blob at all; through the
    service its uploads may stay as unreferenced blobs (uploads come before the write that
    names them, as in an OCI registry): invisible, reported as orphans, collected by gc."""
    assert local.blobs.temp_files() == []
    if kind == "directory":
        assert sorted(local.blobs.digests()) == blobs
        return
    left = set(local.blobs.digests()) - set(blobs)
    assert {f"sha256:{d}" for d in left} == set(reg.verify().orphans)
    reg.verify(gc=True, gc_grace_s=0)
    assert sorted(local.blobs.digests()) == blobs
