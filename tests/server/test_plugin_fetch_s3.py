"""The vLLM resolver plugin's fetch (server/plugin/fetch.py) from a `registry serve`
whose blobs are in S3 (a private SeaweedFS): the adapter comes from presigned URLs (the
registry server sends no blob bytes), digest-checked into the plugin's cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.blob_location import record_blobs
from server.plugin.fetch import AdapterFetcher
from tests.support.registry_service import registry_service
from tests.support.seaweed import seaweed
from tests.support.zoo import BASE_DIR, adapter_dir, fill_registry


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `registry serve` of the demo zoo, its blobs in SeaweedFS."""
    work = tmp_path_factory.mktemp("plugin-s3")
    with seaweed(work / "seaweed") as store, pytest.MonkeyPatch.context() as env:
        for name, value in store.env().items():
            env.setenv(name, value)  # this process fills the zoo; the server inherits it
        root = work / "registry"
        record_blobs(root, store.location())
        fill_registry(root)
        with registry_service(root, work / "serve.log") as proc:
            yield proc.url


def test_the_plugin_pulls_from_presigned_urls(served: str, tmp_path: Path) -> None:
    fetcher = AdapterFetcher(served, tmp_path / "cache", 1 << 30)
    path = fetcher.fetch(str(BASE_DIR), "support-v1@1")
    assert path is not None
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (path / name).read_bytes() == (adapter_dir("support-v1") / name).read_bytes()
    metrics = httpx.get(f"{served}/metrics").text
    sent = next(x for x in metrics.splitlines() if x.startswith("loraport_registry_sent_bytes"))
    assert float(sent.split()[-1]) == 0  # every byte came from the object store
