"""`registry gc [--grace 1h]` (registry/transfer.py collect_garbage, the CLI verb, the
service's ``gc`` operation): what a killed write leaves (an orphan blob, a temp file, an
unfinished multipart upload) goes once older than the grace period and stays before;
a referenced blob never goes. On the directory form (directly and over HTTP) and on a
real SeaweedFS."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import registry
from registry.blob_location import record_blobs
from registry.blobs import FileBlobStore
from registry.cli import main
from registry.digest import Digest
from registry.errors import BadRequestError, IntegrityError
from registry.http_client import HttpRegistry
from registry.local import LocalRegistry
from registry.location import open_local
from registry.s3_blobs import S3BlobStore
from tests.registry.conftest import ON_A_DIRECTORY
from tests.support.mounted_service import MountedServer


def _killed_put(location: str, src: Path, step: str) -> None:
    """A blob write SIGKILLed at ``step``, as a crashed push leaves it."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.killed_put", location, str(src), step],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr.decode()


def _orphan(tmp_path: Path, size: int = 1000) -> Path:
    path = tmp_path / f"orphan-{size}"
    path.write_bytes(os.urandom(size))
    return path


def _referenced(reg: registry.Registry, ref: str, tmp_path: Path) -> set[str]:
    """The digests of ``ref``'s files, pulled (so also: it still pulls)."""
    out = reg.pull(ref, tmp_path / f"pulled-{time.monotonic_ns()}")
    files = [p for p in out.rglob("*") if p.is_file()]
    return {str(Digest.from_hex(hashlib.sha256(p.read_bytes()).hexdigest())) for p in files}


@ON_A_DIRECTORY
def test_gc_on_a_directory(
    reg: registry.Registry,
    local_reg: LocalRegistry,
    make_adapter: Callable[..., Path],
    tmp_path: Path,
) -> None:
    reg.push_adapter(make_adapter("support"), dataset="support-data")
    assert isinstance(local_reg.blobs, FileBlobStore)
    blobs = local_reg.blobs
    hexdigest, _ = blobs.put_file(_orphan(tmp_path))  # a push killed before its record
    _killed_put(str(blobs.root), _orphan(tmp_path, 3 * 2**20), "mid-upload")
    (temp,) = blobs.temp_files()
    orphan = str(Digest.from_hex(hexdigest))

    young = reg.gc(grace_s=3600)
    assert young.removed == () and set(young.kept) == {orphan, f"tmp/{temp.name}"}

    old = time.time() - 7200
    for path in (blobs.path(hexdigest), temp):
        os.utime(path, (old, old))
    aged = reg.gc(grace_s=3600)
    assert set(aged.removed) == {orphan, f"tmp/{temp.name}"} and aged.kept == ()
    assert not blobs.has(hexdigest) and blobs.temp_files() == []

    # Every referenced blob stays, however old.
    for stored in blobs.digests():
        os.utime(blobs.path(stored), (old, old))
    assert reg.gc(grace_s=0) == registry.GcReport(removed=(), kept=())
    assert reg.verify().ok and not reg.verify().orphans
    assert _referenced(reg, "support@1", tmp_path)


def test_a_blob_stored_again_starts_its_grace_over(
    local_reg: LocalRegistry, tmp_path: Path
) -> None:
    """A push whose content matches an old orphan reuses that blob: storing it again must
    make it young, else a gc between that push's blobs and its record would take it."""
    assert isinstance(local_reg.blobs, FileBlobStore)
    blobs, src = local_reg.blobs, _orphan(tmp_path)
    hexdigest, _ = blobs.put_file(src)
    old = time.time() - 7200
    os.utime(blobs.path(hexdigest), (old, old))
    blobs.put_file(src)  # the push's blobs, before its record
    assert local_reg.gc(grace_s=3600).removed == ()
    assert blobs.has(hexdigest)


def test_gc_refuses_a_negative_grace(reg: registry.Registry) -> None:
    with pytest.raises(BadRequestError, match="grace"):
        reg.gc(grace_s=-1)


@pytest.fixture
def s3_reg(
    seaweed_store: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    settings: registry.RegistrySettings,
    base_dir: Path,
    dataset_file: Path,
) -> Iterator[LocalRegistry]:
    for name, value in seaweed_store.env().items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "s3reg"
    record_blobs(root, seaweed_store.location())
    with open_local(root, settings=settings) as opened:
        opened.add_base(base_dir, name="tiny-base", license="apache-2.0")
        opened.add_dataset(dataset_file, name="support-data")
        yield opened


def test_gc_on_s3_over_http_and_the_cli(
    service: MountedServer,
    s3_reg: LocalRegistry,
    seaweed_store: Any,
    settings: registry.RegistrySettings,
    make_adapter: Callable[..., Path],
    tmp_path: Path,
) -> None:
    assert isinstance(s3_reg.blobs, S3BlobStore)
    store = s3_reg.blobs
    with service.serve(s3_reg, settings) as url, HttpRegistry(url, settings) as client:
        client.push_adapter(make_adapter("support"), dataset="support-data")
        referenced = _referenced(client, "support@1", tmp_path)
        hexdigest, _ = store.put_file(_orphan(tmp_path))  # a push killed before its record
        # a push killed mid-way through a multipart upload (above the 8 MiB part size)
        _killed_put(str(store.location), _orphan(tmp_path, 9 * 2**20), "mid-upload")
        assert store.temp_files()
        orphan = str(Digest.from_hex(hexdigest))

        young = client.gc(grace_s=3600)
        assert young.removed == () and orphan in young.kept
        assert any(k.startswith("tmp/") for k in young.kept)

        time.sleep(1.1)  # ages are whole seconds on the store's clock
        runner = CliRunner()
        env = {"REGISTRY_URL": url}
        bad = runner.invoke(main, ["gc", "--grace", "soon"], env=env)
        assert bad.exit_code == BadRequestError.exit_code and "90s" in bad.output
        done = runner.invoke(main, ["gc", "--grace", "0"], env=env)
        assert done.exit_code == 0, done.output
        assert f"removed {orphan}" in done.output and "gc: removed 2, kept 0" in done.output
        assert not store.has(hexdigest) and store.temp_files() == []
        assert referenced <= {str(Digest.from_hex(h)) for h in store.digests()}
        assert _referenced(client, "support@1", tmp_path) == referenced

        # An old orphan stored again (a push of the same bytes) starts its grace over.
        again = _orphan(tmp_path, 2000)
        store.put_file(again)
        time.sleep(2.1)
        store.put_file(again)  # the push's blobs, before its record
        assert client.gc(grace_s=2).removed == ()
        assert len(client.gc(grace_s=2).kept) == 1

        # verify over HTTP catches an object altered, then lost, in the bucket
        victim = Digest(sorted(referenced)[0]).hex
        seaweed_store.client().put_object(Bucket=store.bucket, Key=store.key(victim), Body=b"x")
        assert any("corrupt" in err for err in client.verify().errors)
        seaweed_store.client().delete_object(Bucket=store.bucket, Key=store.key(victim))
        assert any("missing" in err for err in client.verify().errors)
        result = runner.invoke(main, ["verify"], env=env)
        assert result.exit_code == IntegrityError.exit_code and "missing" in result.output
