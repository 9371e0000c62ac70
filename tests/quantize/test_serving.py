"""Serving a variant on real vLLM through the gateway: `gateway serve --base
tiny-llama-fp8` serves the FP8 base, `support-v1` (pushed against the parent) runs on it
through lineage, a pair recorded as failed is refused with a 400 naming the gate and the
override, an adapter never evaluated on the variant and one on an unrelated base are
refused. One gateway (and so one vLLM) for the module."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import registry
from server.supervisor import free_port
from tests.conftest import TEST_DTYPE
from tests.support.launch import VLLM_START_TIMEOUT_S, Process, serving
from tests.support.synthetic import write_adapter, write_base
from tests.support.zoo import adapter_dir

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
GATEWAY = str(Path(sys.executable).with_name("gateway"))
MESSAGE = "Hi, this is Tomas. The hiking boots came broken in the box. Order #22994."


@pytest.fixture(scope="module")
def fp8_gateway(
    q_registry: Path, fp8_variant: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    with registry.open(q_registry, create=False) as reg:
        # The gate's refusal, whatever this session's measurement said about triage.
        failed = registry.PairInput("triage@1", False, ("task_score",), {"forced_by_test": True})
        reg.record_pairs("tiny-llama-fp8", [failed])
        reg.push_adapter(adapter_dir("support-v2"), name="late", base="tiny-llama",
                         allow_unknown_dataset=True)  # fmt: skip
        other = tmp_path_factory.mktemp("other")
        reg.add_base(write_base(other / "base"), name="tiny-base")
        reg.push_adapter(write_adapter(other / "lora"), name="unrelated", base="tiny-base",
                         allow_unknown_dataset=True)  # fmt: skip
    cache = tmp_path_factory.mktemp("gateway-fp8")
    port = free_port()
    cmd = [GATEWAY, "serve", "--registry", str(q_registry), "--base", "tiny-llama-fp8",
           "--port", str(port), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "GATEWAY_CACHE_DIR": str(cache), "GATEWAY_LOCAL__DTYPE": TEST_DTYPE,
           "REGISTRY_URL": ""}  # fmt: skip
    with serving(cmd, port, cache / "gateway.log", "/ready", env, VLLM_START_TIMEOUT_S) as proc:
        yield proc


def chat(url: str, model: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 40, "messages": [{"role": "user", "content": MESSAGE}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def test_the_variant_serves_as_a_base(fp8_gateway: Process) -> None:
    r = chat(fp8_gateway.url, "tiny-llama-fp8")
    assert r.status_code == 200, r.text
    assert r.headers["x-loraport-adapter"] == "tiny-llama-fp8"
    assert r.json()["choices"][0]["message"]["content"].startswith("Hello Tomas.")


def test_an_adapter_of_the_parent_runs_on_the_variant(fp8_gateway: Process) -> None:
    r = chat(fp8_gateway.url, "support-v1")
    assert r.status_code == 200, r.text
    assert r.headers["x-loraport-adapter"] == "support-v1@1"
    assert r.json()["choices"][0]["message"]["content"].startswith("Dear Tomas, thank you")
    models = httpx.get(f"{fp8_gateway.url}/v1/models", timeout=30).json()["data"]
    ids = {m["id"] for m in models}
    assert {"tiny-llama-fp8", "support-v1@1"} <= ids
    assert not {"triage@1", "late@1", "unrelated@1"} & ids


def test_a_failed_pair_is_refused_naming_the_gate_and_the_override(fp8_gateway: Process) -> None:
    r = chat(fp8_gateway.url, "triage")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "variant_gate_failed" and error["param"] == "model"
    assert "task_score" in error["message"]
    assert "quantize eval tiny-llama-fp8 triage@1 --force" in error["message"]


def test_an_adapter_never_evaluated_on_the_variant_is_refused(fp8_gateway: Process) -> None:
    r = chat(fp8_gateway.url, "late")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "variant_pair_not_evaluated"
    assert "quantize eval tiny-llama-fp8 late@1" in r.json()["error"]["message"]


def test_an_adapter_on_an_unrelated_base_is_refused(fp8_gateway: Process) -> None:
    r = chat(fp8_gateway.url, "unrelated")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "adapter_base_mismatch"
