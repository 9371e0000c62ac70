"""`registry serve` over a registry whose blobs are in S3 (registry/service/uploads_s3.py),
on a real SeaweedFS: pushes reach the bucket under their digests and nothing stays on the
server's disk; pulls come from a presigned URL (the server carries no bytes), through the
server when presigning is off or the store cannot be reached from the client, verified
either way; an object store that is down is a 503 ``storage_unavailable``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import registry
from registry.blob_location import record_blobs
from registry.cli import main
from registry.digest import Digest
from registry.errors import BadRequestError, IntegrityError, StorageUnavailableError
from registry.http_client import HttpRegistry
from registry.local import LocalRegistry
from registry.location import open_local
from registry.prepare import FileRef
from registry.s3_blobs import S3BlobStore, S3Location
from registry.service.uploads_s3 import S3Blobs
from tests.support.mounted_service import MountedServer
from tests.support.registry_service import registry_service
from tests.support.seaweed import free_ports, seaweed


@pytest.fixture
def s3_env(seaweed_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard AWS variables pointing this process (and its children) at SeaweedFS."""
    for name, value in seaweed_store.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3_reg(
    s3_env: None,
    seaweed_store: Any,
    tmp_path: Path,
    settings: registry.RegistrySettings,
    base_dir: Path,
    dataset_file: Path,
) -> Iterator[LocalRegistry]:
    """A registry directory with its blobs in a fresh S3 prefix, holding ``tiny-base``
    and ``support-data``."""
    root = tmp_path / "reg"
    record_blobs(root, seaweed_store.location())
    with open_local(root, settings=settings) as opened:
        opened.add_base(base_dir, name="tiny-base", license="apache-2.0")
        opened.add_dataset(dataset_file, name="support-data")
        yield opened


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _sent_bytes(url: str) -> float:
    """The service's ``loraport_registry_sent_bytes_total``."""
    text = httpx.get(f"{url}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("loraport_registry_sent_bytes_total"))
    return float(line.split()[-1])


def _store(reg: LocalRegistry, seaweed_store: Any) -> S3BlobStore:
    assert isinstance(reg.blobs, S3BlobStore)
    return S3BlobStore(reg.blobs.location, client=seaweed_store.client())


def test_push_and_pull_through_the_service(
    service: MountedServer,
    s3_reg: LocalRegistry,
    seaweed_store: Any,
    settings: registry.RegistrySettings,
    tmp_path: Path,
    make_adapter: Callable[..., Path],
) -> None:
    adapter = make_adapter("support")
    store = _store(s3_reg, seaweed_store)
    with service.serve(s3_reg, settings) as url, HttpRegistry(url, settings) as client:
        pushed = client.push_adapter(adapter, dataset="support-data")
        assert pushed.adapter.ref == "support@1"
        assert not client.push_adapter(adapter, dataset="support-data").created

        stored = set(store.digests())
        for path in adapter.rglob("*"):
            if path.is_file():
                assert hashlib.sha256(path.read_bytes()).hexdigest() in stored
        assert not (s3_reg.root / "blobs").exists()  # not a byte on the server's disk
        # each upload's spool file went to the write that named it, then with its scratch
        assert [p for p in (s3_reg.root / "incoming").rglob("*") if p.is_file()] == []
        assert store.temp_files() == []

        client.pull("support@1", tmp_path / "pulled")
        assert _files(tmp_path / "pulled") == _files(adapter)
        assert _sent_bytes(url) == 0  # presigned: the bytes came from the store

        # Damage in the bucket: the client checks what the presigned URL gave it.
        weights = (adapter / "adapter_model.safetensors").read_bytes()
        key = store.key(hashlib.sha256(weights).hexdigest())
        seaweed_store.client().put_object(Bucket=store.bucket, Key=key, Body=b"altered")
        with pytest.raises(IntegrityError, match="corrupt"):
            client.pull("support@1", tmp_path / "damaged")
        assert not (tmp_path / "damaged").exists()
        seaweed_store.client().put_object(Bucket=store.bucket, Key=key, Body=weights)

    streaming = settings.model_copy(update={"presign_s": 0})
    with service.serve(s3_reg, streaming) as url, HttpRegistry(url, streaming) as client:
        client.pull("support@1", tmp_path / "streamed")
        assert _files(tmp_path / "streamed") == _files(adapter)
        assert _sent_bytes(url) == sum(len(b) for b in _files(adapter).values())


def test_a_large_upload_goes_multipart_and_leaves_nothing_behind(
    service: MountedServer,
    s3_reg: LocalRegistry,
    seaweed_store: Any,
    settings: registry.RegistrySettings,
) -> None:
    data = os.urandom(9 * 2**20)  # above PART_BYTES: a multipart upload, then a copy
    hexdigest = hashlib.sha256(data).hexdigest()
    store = _store(s3_reg, seaweed_store)
    with service.serve(s3_reg, settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        wrong = http.post("/v1/blobs", params={"digest": "sha256:" + "0" * 64}, content=data)
        assert wrong.status_code == 400 and not store.has(hexdigest)
        answer = http.post("/v1/blobs", params={"digest": f"sha256:{hexdigest}"}, content=data)
        assert answer.status_code == 200, answer.text
        assert store.has(hexdigest) and store.temp_files() == []
        spool = s3_reg.root / "incoming" / "uploads"
        assert not list(spool.glob("blob-*"))  # no temp file left
        assert [p.name for p in (spool / "ready").iterdir()] == [hexdigest]
        back = http.get(f"/v1/blobs/sha256:{hexdigest}", params={"via": "server"})
        assert back.status_code == 200 and back.content == data
        redirect = http.get(f"/v1/blobs/sha256:{hexdigest}")
        assert redirect.status_code == 307
        assert httpx.get(redirect.headers["location"], timeout=60).content == data
        missing = http.get(f"/v1/blobs/sha256:{'1' * 64}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "ref_not_found"

    # A write takes the upload's own spool file once; after that (or on another server)
    # the file comes back out of the bucket, verified.
    served = S3Blobs(store, s3_reg.root / "incoming", 0)
    ref = FileRef("weights.bin", len(data), Digest.from_hex(hexdigest))
    assert served.lay_out(ref, s3_reg.root / "incoming" / "first")
    assert not (spool / "ready" / hexdigest).exists()
    assert served.lay_out(ref, s3_reg.root / "incoming" / "second")
    for name in ("first", "second"):
        assert (s3_reg.root / "incoming" / name).read_bytes() == data
    with pytest.raises(BadRequestError, match="bytes, not 5"):
        served.lay_out(FileRef("w", 5, ref.digest), s3_reg.root / "incoming" / "third")


def test_a_pull_goes_through_the_server_when_the_store_is_out_of_reach(
    service: MountedServer,
    s3_reg: LocalRegistry,
    settings: registry.RegistrySettings,
    tmp_path: Path,
    make_adapter: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter = make_adapter("support")
    (closed,) = free_ports(1)  # as a store on a network the client is not on
    monkeypatch.setattr(
        s3_reg.blobs, "presigned_url", lambda hexdigest, expires_s: f"http://127.0.0.1:{closed}/x"
    )
    with service.serve(s3_reg, settings) as url, HttpRegistry(url, settings) as client:
        client.push_adapter(adapter, dataset="support-data")
        client.pull("support@1", tmp_path / "pulled")
        assert _files(tmp_path / "pulled") == _files(adapter)
        assert _sent_bytes(url) == sum(len(b) for b in _files(adapter).values())


def test_an_object_store_that_is_down_is_a_503(
    service: MountedServer,
    s3_reg: LocalRegistry,
    settings: registry.RegistrySettings,
    tmp_path: Path,
    make_adapter: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3_reg.push_adapter(make_adapter("support"), dataset="support-data")
    (closed,) = free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")  # the store went away
    with (
        open_local(s3_reg.root, settings=settings, create=False) as down,
        service.serve(down, settings) as url,
        HttpRegistry(url, settings) as client,
    ):
        entries = httpx.get(f"{url}/v1/manifest", params={"ref": "support@1"}).json()
        digest = entries["result"]["entries"][0]["sha256"]
        answer = httpx.get(f"{url}/v1/blobs/sha256:{digest}", timeout=60)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "storage_unavailable"
        assert f"127.0.0.1:{closed}" in answer.json()["error"]["message"]
        with pytest.raises(StorageUnavailableError):
            client.pull("support@1", tmp_path / "pulled")
        assert not (tmp_path / "pulled").exists()
        with pytest.raises(StorageUnavailableError):
            client.push_adapter(make_adapter("other"), dataset="support-data")
        assert [a.ref for a in client.list_adapters()] == ["support@1"]  # nothing recorded


def test_registry_serve_over_blobs_in_s3_end_to_end(
    s3_env: None, seaweed_store: Any, tmp_path: Path, base_dir: Path, make_adapter: Any
) -> None:
    """The real `registry serve` process (once refused with exit 15), driven by the CLI."""
    url = seaweed_store.location()
    root = tmp_path / "reg"
    runner = CliRunner()
    assert runner.invoke(main, ["init", "--registry", str(root), "--blobs", url]).exit_code == 0
    adapter = make_adapter("support")
    with registry_service(root, tmp_path / "serve.log") as proc:
        env = {"REGISTRY_URL": proc.url, "REGISTRY_USER": "s3-tester"}

        def cli(*args: str) -> tuple[int, str]:
            result = runner.invoke(main, list(args), env=env)
            return result.exit_code, result.output

        assert cli("base", "add", str(base_dir), "--name", "tiny-base", "--license", "mit")[0] == 0
        code, out = cli("push", str(adapter), "--allow-unknown-dataset")
        assert code == 0 and out.startswith("support@1 sha256:"), out
        code, out = cli("pull", "support@1", str(tmp_path / "pulled"))
        assert code == 0, out
        assert _files(tmp_path / "pulled") == _files(adapter)
        assert cli("verify")[0] == 0
    assert not (root / "blobs").exists()
    assert S3Location.parse(url).prefix


def test_an_object_store_killed_mid_life_is_a_503(
    service: MountedServer,
    settings: registry.RegistrySettings,
    tmp_path: Path,
    base_dir: Path,
    dataset_file: Path,
    make_adapter: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A private SeaweedFS (the session's must live on), killed under a serving registry."""
    with seaweed(tmp_path / "weed") as store:
        for name, value in store.env().items():
            monkeypatch.setenv(name, value)
        root = tmp_path / "reg"
        record_blobs(root, store.location())
        with (
            open_local(root, settings=settings) as local,
            service.serve(local, settings) as url,
            HttpRegistry(url, settings) as client,
        ):
            local.add_base(base_dir, name="tiny-base", license="apache-2.0")
            local.add_dataset(dataset_file, name="support-data")
            client.push_adapter(make_adapter("support"), dataset="support-data")
            store.stop(grace_s=0.1)  # SIGKILL

            entries = httpx.get(f"{url}/v1/manifest", params={"ref": "support@1"}).json()
            digest = entries["result"]["entries"][0]["sha256"]
            answer = httpx.get(f"{url}/v1/blobs/sha256:{digest}", timeout=60)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "storage_unavailable"
            assert answer.headers["retry-after"] == "1"
            with pytest.raises(StorageUnavailableError):
                client.pull("support@1", tmp_path / "pulled")
            with pytest.raises(StorageUnavailableError):
                client.push_adapter(make_adapter("other"), dataset="support-data")
            assert [a.ref for a in client.list_adapters()] == ["support@1"]  # records answer
