"""A registry directory whose blobs live in S3 (`registry init --blobs s3://...`), end to
end through the CLI on a real SeaweedFS: push, pull, verify, damage caught, nothing in the
directory's own ``blobs/``."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from registry.blob_location import BLOBS_FILE
from registry.cli import main
from registry.errors import (
    IntegrityError,
    NotARegistryError,
    StorageUnavailableError,
    UnsupportedLocationError,
)
from registry.s3_blobs import S3BlobStore, S3Location
from tests.support.seaweed import free_ports

Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(seaweed_store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """``registry ARGS`` with the AWS variables set to the session's SeaweedFS."""
    for name, value in seaweed_store.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REGISTRY_URL", str(tmp_path / "reg"))
    monkeypatch.setenv("REGISTRY_USER", "s3-tester")

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, list(args))
        return result.exit_code, result.output

    return run


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_push_pull_verify_with_blobs_in_s3(
    cli: Cli,
    seaweed_store: Any,
    tmp_path: Path,
    base_dir: Path,
    dataset_file: Path,
    make_adapter: Callable[..., Path],
) -> None:
    url = seaweed_store.location()
    reg = tmp_path / "reg"
    code, out = cli("init", "--registry", str(reg), "--blobs", url)
    assert code == 0 and url in out, out
    assert json.loads((reg / BLOBS_FILE).read_text()) == {"blobs": url}
    assert cli("base", "add", str(base_dir), "--name", "tiny-base", "--license", "mit")[0] == 0
    assert cli("dataset", "add", str(dataset_file), "--name", "support-data")[0] == 0
    adapter = make_adapter("support")
    code, out = cli("push", str(adapter), "--dataset", "support-data")
    assert code == 0 and out.startswith("support@1 sha256:"), out
    code, out = cli("push", str(adapter), "--dataset", "support-data")
    assert code == 0 and "(already existed)" in out

    assert not (reg / "blobs").exists()  # every byte went to the bucket
    store = S3BlobStore(url, client=seaweed_store.client())
    stored = set(store.digests())
    for path in adapter.rglob("*"):
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() in stored

    code, out = cli("pull", "support@1", str(tmp_path / "pulled"))
    assert code == 0, out
    assert _files(tmp_path / "pulled") == _files(adapter)
    code, out = cli("verify")
    assert code == 0, out

    # What a killed push leaves in the bucket: listed by verify, collected by --gc.
    client, bucket = seaweed_store.client(), seaweed_store.bucket
    client.put_object(Bucket=bucket, Key=S3Location.parse(url).key("tmp", "killed"), Body=b"h")
    code, out = cli("verify")
    assert code == 0 and "tmp/killed" in out, out
    time.sleep(1.1)  # ages are whole seconds on the store's clock
    code, out = cli("verify", "--gc", "--grace", "0")
    assert code == 0 and "tmp/killed" in out, out
    assert "tmp/killed" not in cli("verify")[1]
    assert set(store.digests()) == stored  # every referenced blob kept

    # Damage done in the bucket, around the registry: verify and pull both catch it.
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    key = S3Location.parse(url).key("sha256", hashlib.sha256(weights).hexdigest())
    seaweed_store.client().put_object(Bucket=seaweed_store.bucket, Key=key, Body=b"altered")
    code, out = cli("verify")
    assert code == IntegrityError.exit_code and "adapter_model.safetensors" in out
    assert "corrupt" in out, out
    code, out = cli("pull", "support@1", str(tmp_path / "again"))
    assert code == IntegrityError.exit_code and "corrupt" in out
    seaweed_store.client().delete_object(Bucket=seaweed_store.bucket, Key=key)
    code, out = cli("verify")
    assert code == IntegrityError.exit_code and "missing" in out


def test_the_blob_location_is_fixed_at_init(cli: Cli, seaweed_store: Any, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    assert cli("init", "--registry", str(plain))[0] == 0
    code, out = cli("init", "--registry", str(plain), "--blobs", seaweed_store.location())
    assert code == UnsupportedLocationError.exit_code and "cannot move" in out
    assert not (plain / BLOBS_FILE).exists()

    url = seaweed_store.location()
    in_s3 = tmp_path / "in-s3"
    assert cli("init", "--registry", str(in_s3), "--blobs", url)[0] == 0
    assert cli("init", "--registry", str(in_s3), "--blobs", url)[0] == 0  # same: a no-op
    code, out = cli("init", "--registry", str(in_s3), "--blobs", seaweed_store.location())
    assert code == UnsupportedLocationError.exit_code and url in out

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a registry")
    code, _ = cli("init", "--registry", str(foreign), "--blobs", url)
    assert code == NotARegistryError.exit_code and not (foreign / BLOBS_FILE).exists()


def test_init_with_an_unreachable_store_creates_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    reg = tmp_path / "down"
    code, out = cli("init", "--registry", str(reg), "--blobs", "s3://bucket/x")
    assert code == StorageUnavailableError.exit_code and f"127.0.0.1:{port}" in out, out
    assert not reg.exists() or not any(reg.iterdir())
