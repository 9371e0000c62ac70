"""The BlobStore contract, run on every implementation: the directory form
(:class:`FileBlobStore`) and S3 (:class:`S3BlobStore`) on a real SeaweedFS. Tampering goes
around the store (the file itself; the object through boto3), as damage would."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from registry.blobs import BlobStore, FileBlobStore
from registry.errors import IntegrityError, StorageUnavailableError, UnsupportedLocationError
from registry.s3_blobs import PART_BYTES, S3BlobStore, S3Location, part_bytes
from tests.support.blobs import hash_file, put_bytes
from tests.support.seaweed import ACCESS_KEY, REGION, SECRET_KEY, free_ports

KINDS = ["directory", "s3"]
MiB = 2**20


@dataclass
class UnderTest:
    """A blob store and what damage to it looks like, done around the store."""

    store: BlobStore
    location: str
    overwrite: Callable[[str, bytes], None]
    delete: Callable[[str], None]
    leave_temp: Callable[[str, bytes], None]
    env: dict[str, str]


def _directory(tmp_path: Path) -> UnderTest:
    store = FileBlobStore(tmp_path / "blobs")

    def overwrite(hexdigest: str, data: bytes) -> None:
        os.chmod(store.path(hexdigest), 0o644)
        store.path(hexdigest).write_bytes(data)

    def leave_temp(name: str, data: bytes) -> None:
        store.tmp.mkdir(parents=True, exist_ok=True)
        (store.tmp / name).write_bytes(data)

    return UnderTest(
        store, str(store.root), overwrite, lambda h: store.path(h).unlink(), leave_temp, {}
    )


def _s3(seaweed: Any) -> UnderTest:
    location = seaweed.location()
    store = S3BlobStore(location, client=seaweed.client())
    client, bucket = seaweed.client(), seaweed.bucket

    def overwrite(hexdigest: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=store.key(hexdigest), Body=data)

    def delete(hexdigest: str) -> None:
        client.delete_object(Bucket=bucket, Key=store.key(hexdigest))

    def leave_temp(name: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=store.location.key("tmp", name), Body=data)

    return UnderTest(store, location, overwrite, delete, leave_temp, seaweed.env())


@pytest.fixture(params=KINDS)
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> UnderTest:
    if request.param == "directory":
        return _directory(tmp_path)
    return _s3(request.getfixturevalue("seaweed_store"))


def _write(path: Path, size: int, seed: int = 0) -> Path:
    """A file of ``size`` pseudo-random bytes, written 1 MiB at a time."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    with open(path, "wb") as fh:
        for start in range(0, size, MiB):
            fh.write(block[: min(MiB, size - start)])
            block = block[1:] + block[:1]
    return path


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _settle_clock(blobs: UnderTest) -> None:
    """S3 ages are whole seconds on the store's clock: let one pass, so an object written
    just now counts as older than a grace of 0."""
    if isinstance(blobs.store, S3BlobStore):
        time.sleep(1.1)


def test_put_has_read_and_list(blobs: UnderTest, tmp_path: Path) -> None:
    store = blobs.store
    src = tmp_path / "src"
    src.write_bytes(b"hello" * 1000)
    seen: list[int] = []
    hexdigest, size = store.put_file(src, seen.append)
    assert (hexdigest, size) == hash_file(src)
    assert sum(seen) == 5000
    assert store.put_file(src) == (hexdigest, size)  # idempotent
    assert store.has(hexdigest) and not store.has(_hex(b"never stored"))
    assert store.read_bytes(hexdigest) == b"hello" * 1000
    empty = put_bytes(store, b"")
    assert empty == _hex(b"") and store.read_bytes(empty) == b""
    assert sorted(store.digests()) == sorted([hexdigest, empty])
    assert list(store.temp_files()) == []
    assert store.problem(hexdigest) is None


def test_copy_out_verifies(blobs: UnderTest, tmp_path: Path) -> None:
    store = blobs.store
    hexdigest = put_bytes(store, b"payload")
    store.copy_out(hexdigest, tmp_path / "ok")
    assert (tmp_path / "ok").read_bytes() == b"payload"
    with pytest.raises(IntegrityError, match="missing"):
        store.copy_out(_hex(b"absent"), tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(FileExistsError):
        store.copy_out(hexdigest, tmp_path / "ok")  # never overwrites


def test_altered_and_lost_blobs_are_caught(blobs: UnderTest, tmp_path: Path) -> None:
    store = blobs.store
    altered = put_bytes(store, b"original bytes")
    lost = put_bytes(store, b"soon gone")
    blobs.overwrite(altered, b"tampered bytes")
    blobs.delete(lost)
    assert store.problem(altered) == f"corrupt (hashes to sha256:{_hex(b'tampered bytes')})"
    assert store.problem(lost) == "missing"
    with pytest.raises(IntegrityError, match="corrupt"):
        store.copy_out(altered, tmp_path / "bad")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.read_bytes(altered)
    with pytest.raises(IntegrityError, match="missing"):
        store.read_bytes(lost)
    assert not store.has(lost) and list(store.digests()) == [altered]


def test_collect_removes_orphans_and_temps_after_the_grace(blobs: UnderTest) -> None:
    store = blobs.store
    keep = put_bytes(store, b"keep")
    orphan = put_bytes(store, b"orphan")
    blobs.leave_temp("blob-leftover", b"half")
    assert [p.name for p in store.temp_files()] == ["blob-leftover"]
    assert store.collect({keep}, grace_s=3600) == []
    _settle_clock(blobs)
    removed = store.collect({keep}, grace_s=0)
    assert sorted(removed) == sorted([f"sha256:{orphan}", "tmp/blob-leftover"])
    assert list(store.digests()) == [keep] and list(store.temp_files()) == []
    assert store.read_bytes(keep) == b"keep"


@pytest.mark.parametrize("step", ["mid-upload", "before-rename"])
def test_a_killed_put_leaves_only_temps_that_collect_removes(
    blobs: UnderTest, tmp_path: Path, step: str
) -> None:
    src = _write(tmp_path / "big", 20 * MiB)
    env = {**os.environ, **blobs.env, "PYTHONPATH": str(Path(__file__).parents[2])}
    killed = subprocess.run(
        [sys.executable, "-m", "tests.support.killed_put", blobs.location, str(src), step],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    store = blobs.store
    assert list(store.digests()) == []  # nothing under a digest: no half blob is visible
    assert len(store.temp_files()) == 1  # an unfinished upload (S3) or a temp file
    assert store.collect(set(), grace_s=3600) == []  # a put in flight is left alone
    _settle_clock(blobs)
    assert len(store.collect(set(), grace_s=0)) == 1
    assert list(store.temp_files()) == [] and list(store.digests()) == []
    assert store.put_file(src) == hash_file(src)  # and the put works afterwards


def test_a_large_file_is_streamed_in_bounded_memory(blobs: UnderTest, tmp_path: Path) -> None:
    size = 6 * PART_BYTES + 12345  # several S3 parts and a short last one
    src = _write(tmp_path / "large", size, seed=1)
    store = blobs.store
    tracemalloc.start()
    try:
        hexdigest, stored = store.put_file(src)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        store.copy_out(hexdigest, tmp_path / "back")
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (hexdigest, stored) == hash_file(src) == hash_file(tmp_path / "back")
    print(f"{type(store).__name__}: {size / MiB:.0f} MiB, peak {put_peak / MiB:.1f} MiB "
          f"putting, {read_peak / MiB:.1f} MiB reading")  # fmt: skip
    assert put_peak < 3 * PART_BYTES and read_peak < 3 * PART_BYTES  # not the whole file
    assert store.problem(hexdigest) is None and list(store.temp_files()) == []


def test_concurrent_puts_of_the_same_content(blobs: UnderTest, tmp_path: Path) -> None:
    big = _write(tmp_path / "big", 2 * PART_BYTES + 1, seed=2)
    small = tmp_path / "small"
    small.write_bytes(b"small and shared")
    srcs = [big, small] * 4
    start = threading.Barrier(len(srcs))

    def put(src: Path) -> tuple[str, int]:
        start.wait()
        return blobs.store.put_file(src)

    with ThreadPoolExecutor(len(srcs)) as pool:
        results = list(pool.map(put, srcs))
    assert results == [hash_file(src) for src in srcs]
    assert sorted(blobs.store.digests()) == sorted({hash_file(big)[0], hash_file(small)[0]})
    assert list(blobs.store.temp_files()) == []
    assert all(blobs.store.problem(h) is None for h, _ in results)


# -- S3 only ------------------------------------------------------------------------------


@pytest.fixture
def aws_env(seaweed_store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The standard AWS variables set to the session's SeaweedFS (what a user does)."""
    for name, value in seaweed_store.env().items():
        monkeypatch.setenv(name, value)
    yield seaweed_store


def test_the_endpoint_and_credentials_come_from_the_aws_variables(
    aws_env: Any, tmp_path: Path
) -> None:
    location = aws_env.location()
    store = S3BlobStore(location)  # no client given: boto3 reads AWS_ENDPOINT_URL itself
    assert store.endpoint == aws_env.endpoint
    hexdigest = put_bytes(store, b"through the environment")
    key = S3Location.parse(location).key("sha256", hexdigest)
    body = aws_env.client().get_object(Bucket=aws_env.bucket, Key=key)["Body"].read()
    assert body == b"through the environment"


def test_an_unreachable_store_is_a_typed_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    store = S3BlobStore("s3://bucket/prefix")
    src = tmp_path / "src"
    src.write_bytes(b"x")
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=f"127.0.0.1:{port}.*did not answer"):
        store.put_file(src)
    assert time.monotonic() - started < 30  # bounded retries, no hang
    for call in (lambda: store.has("0" * 64), lambda: store.problem("0" * 64)):
        with pytest.raises(StorageUnavailableError) as caught:
            call()
        assert (caught.value.exit_code, caught.value.http_status) == (46, 503)
    with pytest.raises(StorageUnavailableError):
        store.copy_out("0" * 64, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_bucket_is_a_typed_error(seaweed_store: Any, tmp_path: Path) -> None:
    store = S3BlobStore("s3://no-such-bucket/x", client=seaweed_store.client())
    with pytest.raises(StorageUnavailableError, match="bucket 'no-such-bucket' does not exist"):
        store.problem("0" * 64)
    with pytest.raises(StorageUnavailableError, match="'no-such-bucket'"):
        put_bytes(store, b"x")  # SeaweedFS answers a HEAD there with 403 AccessDenied


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "key"),
    [
        ("s3://bucket", "bucket", "", "sha256/ab"),
        ("s3://bucket/", "bucket", "", "sha256/ab"),
        ("s3://my.bucket-1/team/blobs/", "my.bucket-1", "team/blobs", "team/blobs/sha256/ab"),
    ],
)
def test_s3_locations(url: str, bucket: str, prefix: str, key: str) -> None:
    location = S3Location.parse(url)
    assert (location.bucket, location.prefix, location.key("sha256", "ab")) == (bucket, prefix, key)
    assert S3Location.parse(str(location)) == location


@pytest.mark.parametrize(
    "url", ["s3://", "s3://B/x", "s3://ab", "s3:/bucket", "s3://bucket/a//b", "s3://bucket/../x"]
)
def test_bad_s3_locations_are_refused(url: str) -> None:
    with pytest.raises(UnsupportedLocationError):
        S3Location.parse(url)


def test_part_size_grows_only_past_the_part_limit() -> None:
    assert part_bytes(0) == part_bytes(80_000 * MiB) == PART_BYTES
    assert part_bytes(200 * 2**30) == 21 * MiB  # 10,000 parts of 21 MiB hold 200 GiB
