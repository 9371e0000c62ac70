"""A merged deployment served as a base on real vLLM through the gateway: `gateway serve
--base support-v1-1-merged` answers as `support-v1@1` does in adapter mode (the parent
with the LoRA on top, through the session's vLLM), and refuses the parent's other
adapters: it already holds its one adapter. Its own module, so the FP8 gateway of
test_serving.py is down before this one's vLLM starts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.supervisor import free_port
from tests.conftest import TEST_DTYPE
from tests.quantize.test_serving import GATEWAY
from tests.support import launch
from tests.support.launch import VLLM_START_TIMEOUT_S, Process, serving
from tests.support.zoo import EXAMPLES

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
PROMPTS = [
    json.loads(row)["messages"]
    for row in (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()[:6]
]


@pytest.fixture(scope="module")
def merged_gateway(
    q_registry: Path, merged_variant: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    cache = tmp_path_factory.mktemp("gateway-merged")
    port = free_port()
    cmd = [GATEWAY, "serve", "--registry", str(q_registry), "--base", merged_variant,
           "--port", str(port), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "GATEWAY_CACHE_DIR": str(cache), "GATEWAY_LOCAL__DTYPE": TEST_DTYPE,
           "REGISTRY_URL": ""}  # fmt: skip
    with serving(cmd, port, cache / "gateway.log", "/ready", env, VLLM_START_TIMEOUT_S) as proc:
        yield proc


def answers(url: str, model: str) -> list[str]:
    out = []
    for messages in PROMPTS:
        body = {"model": model, "max_tokens": 40, "temperature": 0, "messages": messages}
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        out.append(r.json()["choices"][0]["message"]["content"])
    return out


def test_the_merged_deployment_answers_as_adapter_mode_does(
    merged_gateway: Process, merged_variant: str, vllm_server: str, q_registry: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    merged = answers(merged_gateway.url, merged_variant)
    env = {"GATEWAY_LOCAL__DTYPE": TEST_DTYPE, "REGISTRY_URL": ""}
    with launch.gateway(q_registry, tmp_path, backend=vllm_server, env=env) as adapter_mode:
        expected = answers(adapter_mode.url, "support-v1@1")
        base = answers(adapter_mode.url, "tiny-llama")
    assert all(a.startswith("Dear ") for a in merged), merged  # support-v1's voice
    assert all(a.startswith("Hello ") for a in base), base  # the base's, for contrast
    assert merged == expected


def test_the_merged_deployment_takes_no_other_adapter(
    merged_gateway: Process, merged_variant: str
) -> None:
    body = {"model": "support-v2", "max_tokens": 8, "messages": PROMPTS[0]}
    r = httpx.post(f"{merged_gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "adapter_base_mismatch"
    models = httpx.get(f"{merged_gateway.url}/v1/models", timeout=30).json()["data"]
    assert [m["id"] for m in models] == [merged_variant]
