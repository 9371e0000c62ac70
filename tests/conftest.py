"""Session fixtures shared by the whole suite: the committed demo zoo, a registry that
holds it, and ONE real vLLM CPU server (started once per session, launched with the
exact command line the gateway's supervisor uses). The pieces live in `tests.support`,
shared with `bench/`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.settings import GatewaySettings, LocalVllm
from tests.support.launch import VLLM_START_TIMEOUT_S, wait_for
from tests.support.launch import vllm_server as launch_vllm
from tests.support.zoo import ADAPTERS, BASE_DIR, BASE_NAME, EXAMPLES, adapter_dir, fill_registry

__all__ = [
    "ADAPTERS",
    "BASE_DIR",
    "BASE_NAME",
    "EXAMPLES",
    "TEST_DTYPE",
    "VLLM_START_TIMEOUT_S",
    "adapter_dir",
    "fill_registry",
    "gateway_settings",
    "wait_for",
]

# float32 on the CPU: the tiny model is cheap, and greedy parity with transformers+peft
# (which runs float32 too) is then exact rather than approximate.
TEST_DTYPE = "float32"


@pytest.fixture(scope="session")
def zoo_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    location = tmp_path_factory.mktemp("zoo") / "registry"
    fill_registry(location)
    return location


def gateway_settings(**overrides: object) -> GatewaySettings:
    local = LocalVllm(dtype=TEST_DTYPE, max_loras=4, max_lora_rank=8)
    return GatewaySettings(local=local, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real vLLM OpenAI server on the committed tiny model, for the whole session."""
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with launch_vllm(gateway_settings(max_loaded_adapters=8), log) as proc:
        yield proc.url
