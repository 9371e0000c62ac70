"""What the vLLM resolver plugin does for a name, without vLLM: which names are ours, and
the fetch (pull into the server's own cache, checked against the base it runs) on a real
registry directory. The plugin inside real vLLM servers: tests/server/test_cluster.py."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from vllm.lora.resolver import LoRAResolverRegistry

import registry
from server.plugin import vllm as vllm_plugin
from server.plugin.fetch import STALE_INCOMING_S, AdapterFetcher, NotServable, Wanted, wanted
from tests.support.zoo import BASE_DIR, BASE_NAME, adapter_dir, fill_registry

MAX_FILE_BYTES = 1 << 30


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("support-v1@1", Wanted("support-v1@1")),
        ("support-v1@1+0123456789ab", Wanted("support-v1@1", "0123456789ab")),
        ("support-v1", None),  # a bare name moves with `production`: not immutable
        ("support-v1@production", None),  # an alias moves
        ("support-v1@canary", None),
        ("tiny-llama", None),
        ("sha256:" + "0" * 64, None),
        ("../../etc/passwd", None),
        ("/etc/passwd@1", None),
        ("support-v1@1/../../x", None),
        ("support-v1@1+0123456789ab/..", None),
        ("support-v1@0", None),
        ("support-v1@-1", None),
        ("support-v1@1+XYZ", None),
        ("", None),
        ("a" * 10_000 + "@1", None),
        ("support v1@1", None),
        ("support-v1@1\x00", None),
    ],
)
def test_only_immutable_loraport_names_are_ours(name: str, expected: Wanted | None) -> None:
    assert wanted(name) == expected


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    location = tmp_path_factory.mktemp("fetch") / "registry"
    fill_registry(location)
    return location


def stable_name(location: Path, ref: str) -> str:
    with registry.open(location, create=False) as reg:
        return registry.lora_name(reg.adapter(ref))


def test_a_version_is_pulled_once_into_the_cache_by_its_digest(zoo: Path, tmp_path: Path) -> None:
    fetcher = AdapterFetcher(str(zoo), tmp_path / "cache", MAX_FILE_BYTES)
    path = fetcher.fetch(str(BASE_DIR), "support-v1@1")
    assert path is not None
    with registry.open(zoo, create=False) as reg:
        digest = reg.adapter("support-v1@1").digest
    assert path == tmp_path / "cache" / digest.hex
    assert (path / "adapter_config.json").read_bytes() == (
        adapter_dir("support-v1") / "adapter_config.json"
    ).read_bytes()
    # The stable name of the same version is the same directory; nothing else is left.
    again = fetcher.fetch(str(BASE_DIR), stable_name(zoo, "support-v1@1"))
    assert again == path
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [digest.hex]


def test_pulls_a_killed_server_left_half_done_are_swept(zoo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old, fresh = cache / ".incoming-old", cache / ".incoming-fresh"
    for leftover in (old, fresh):
        (leftover / "adapter").mkdir(parents=True)
    os.utime(old, (time.time() - 2 * STALE_INCOMING_S,) * 2)
    fetcher = AdapterFetcher(str(zoo), cache, MAX_FILE_BYTES)
    assert fetcher.fetch(str(BASE_DIR), "triage@1") is not None
    assert not old.exists()
    assert fresh.exists()  # perhaps another server's pull in progress


def test_names_that_are_not_ours_or_not_there_are_none(zoo: Path, tmp_path: Path) -> None:
    fetcher = AdapterFetcher(str(zoo), tmp_path / "cache", MAX_FILE_BYTES)
    for name in ("support-v1@production", "../../x", "nobody@1", "support-v1@9"):
        assert fetcher.fetch(str(BASE_DIR), name) is None
    assert not (tmp_path / "cache").exists()


def test_a_stable_name_whose_content_differs_is_refused(zoo: Path, tmp_path: Path) -> None:
    fetcher = AdapterFetcher(str(zoo), tmp_path / "cache", MAX_FILE_BYTES)
    with pytest.raises(NotServable, match="never changes its weights"):
        fetcher.fetch(str(BASE_DIR), "support-v1@1+000000000000")


def test_an_adapter_of_another_base_is_refused(zoo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-base"
    shutil.copytree(BASE_DIR, other)
    config = other / "config.json"
    config.write_text(config.read_text().replace("{", '{"loraport_test": 1, ', 1))
    with registry.open(zoo, create=False) as reg:
        reg.add_base(other, name="other-base")
    fetcher = AdapterFetcher(str(zoo), tmp_path / "cache", MAX_FILE_BYTES)
    with pytest.raises(NotServable, match=f"trained on base '{BASE_NAME}'"):
        fetcher.fetch(str(other), "support-v1@1")
    assert not (tmp_path / "cache").exists()


def test_a_model_that_is_not_a_registered_directory_is_refused(zoo: Path, tmp_path: Path) -> None:
    fetcher = AdapterFetcher(str(zoo), tmp_path / "cache", MAX_FILE_BYTES)
    with pytest.raises(NotServable, match="not a directory"):
        fetcher.fetch("TinyLlama/TinyLlama-1.1B", "support-v1@1")
    unknown = tmp_path / "unknown-base"
    shutil.copytree(BASE_DIR, unknown)
    (unknown / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    with pytest.raises(NotServable, match="not a base in the registry") as refused:
        fetcher.fetch(str(unknown), "support-v1@1")
    assert f"registry base add {unknown} --name NAME" in str(refused.value)  # a real verb


def test_a_quarantined_version_is_refused(tmp_path: Path) -> None:
    location = tmp_path / "registry"
    fill_registry(location)
    with registry.open(location, create=False) as reg:
        reg.quarantine("extract@1", reason="test: bad weights")
    fetcher = AdapterFetcher(str(location), tmp_path / "cache", MAX_FILE_BYTES)
    with pytest.raises(NotServable, match="quarantined"):
        fetcher.fetch(str(BASE_DIR), "extract@1")


def test_the_plugin_registers_only_with_a_registry(
    monkeypatch: pytest.MonkeyPatch, zoo: Path
) -> None:
    monkeypatch.delenv("REGISTRY_URL", raising=False)
    monkeypatch.setattr(LoRAResolverRegistry, "resolvers", {})
    vllm_plugin.register()
    assert LoRAResolverRegistry.get_supported_resolvers() == set()
    monkeypatch.setenv("REGISTRY_URL", str(zoo))
    vllm_plugin.register()
    assert set(LoRAResolverRegistry.get_supported_resolvers()) == {"loraport"}
