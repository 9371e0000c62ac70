"""pull reproduces directories byte for byte; verify and pull catch damaged blobs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

import registry
from registry.digest import ManifestEntry, manifest_digest
from registry.local import LocalRegistry
from registry.protocol import Registry
from tests.support.blobs import delete_blob, hash_file, overwrite_blob, put_bytes


def _digest_of(directory: Path) -> str:
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        hexdigest, size = hash_file(path)
        entries.append(ManifestEntry(path.relative_to(directory).as_posix(), size, hexdigest))
    return manifest_digest(entries)


def _corrupt(reg: LocalRegistry, directory: Path, relpath: str) -> None:
    data = bytearray((directory / relpath).read_bytes())
    data[20:23] = b"\x00\x01\x02"
    overwrite_blob(reg.blobs, hashlib.sha256((directory / relpath).read_bytes()).hexdigest(), data)


def test_pull_round_trip(reg: Registry, make_adapter: Callable[..., Path], tmp_path: Path) -> None:
    src = make_adapter("support")
    (src / "README.md").write_text("every file survives\n")
    v = reg.push_adapter(src, dataset="support-data").adapter
    out = reg.pull("support@1", tmp_path / "out" / "support")
    assert _digest_of(out) == _digest_of(src) == v.digest
    assert (out / "README.md").read_text() == "every file survives\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert reg.pull("support", empty) == empty
    with pytest.raises(registry.DestinationExistsError):
        reg.pull("support", out)


def test_pull_base_and_dataset(reg: Registry, base_dir: Path, tmp_path: Path) -> None:
    out = reg.pull("tiny-base", tmp_path / "base")
    assert "README.md" not in {p.name for p in out.iterdir()}  # not a canonical file
    assert (out / "model.safetensors").read_bytes() == (base_dir / "model.safetensors").read_bytes()
    assert _digest_of(out) == reg.base("tiny-base").digest
    data = reg.pull("support-data", tmp_path / "data")
    assert [p.name for p in data.iterdir()] == ["support-data.jsonl"]


def test_corrupt_blob_is_reported_and_refused(
    reg: Registry, backing_reg: LocalRegistry, make_adapter: Callable[..., Path], tmp_path: Path
) -> None:
    src = make_adapter()
    reg.push_adapter(src, dataset="support-data")
    assert reg.verify().ok and reg.verify("support@1").ok
    _corrupt(backing_reg, src, "adapter_model.safetensors")
    report = reg.verify()
    assert not report.ok and "corrupt" in report.errors[0]
    assert not reg.verify("support@1").ok
    with pytest.raises(registry.IntegrityError, match="corrupt"):
        reg.pull("support@1", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.pull-")]


def test_missing_blob_and_orphans(
    reg: Registry, backing_reg: LocalRegistry, make_adapter: Callable[..., Path]
) -> None:
    src = make_adapter()
    reg.push_adapter(src, dataset="support-data")
    orphan = put_bytes(backing_reg.blobs, b"left by a killed push")
    report = reg.verify()
    assert report.ok and report.orphans == (f"sha256:{orphan}",)
    assert reg.verify(gc=True, gc_grace_s=0).collected == (f"sha256:{orphan}",)
    assert reg.verify().orphans == ()
    delete_blob(backing_reg.blobs, hash_file(src / "adapter_config.json")[0])
    assert "missing" in reg.verify().errors[0]


def test_pull_into_an_unwritable_place_is_a_clear_error(
    reg: Registry, make_adapter: Callable[..., Path], tmp_path: Path
) -> None:
    """Rough edge: `pull` into an unwritable parent gave a traceback."""
    reg.push_adapter(make_adapter("support"), dataset="support-data")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(registry.DestinationUnwritableError, match="a-file is a file; pull into"):
        reg.pull("support", blocker / "support")
    assert blocker.read_text() == "x"
