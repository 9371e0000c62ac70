"""The bounded LRU really frees vLLM's slots (vllm#54839) and reloads correct weights."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import EXAMPLES
from tests.server.conftest import running_gateway, scrape

pytestmark = pytest.mark.vllm

MSGS = json.loads((EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()[0])["messages"]


def ask(url: str, model: str) -> str:
    r = httpx.post(
        f"{url}/v1/chat/completions",
        timeout=120,
        json={
            "model": model,
            "messages": MSGS,
            "temperature": 0,
            "max_tokens": 48,
            "response_format": {"type": "text"},
        },
    )
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


def test_lru_evicts_cold_adapters_and_reloads_them(
    vllm_server: str, zoo_registry: Path, tmp_path: Path
) -> None:
    """Capacity 2 on a vLLM server that other gateways have filled: leftovers are taken
    over and evicted first, then the least recently used of our own."""
    with running_gateway(vllm_server, zoo_registry, tmp_path, max_loaded_adapters=2) as gw:
        first = {m: ask(gw.url, m) for m in ("support-v1", "support-v2", "triage")}
        assert held(vllm_server) == {"support-v2@1", "triage@1"}
        assert scrape(gw.url, "loraport_adapter_evictions_total", adapter="support-v1") == 1
        # support-v1 comes back (evicting support-v2) with the same weights as before.
        assert ask(gw.url, "support-v1") == first["support-v1"]
        assert held(vllm_server) == {"triage@1", "support-v1@1"}
        assert ask(gw.url, "support-v2") == first["support-v2"]
        assert held(vllm_server) == {"support-v1@1", "support-v2@1"}
        assert scrape(gw.url, "loraport_adapter_evictions_total", adapter="support-v2") == 1
        assert scrape(gw.url, "loraport_adapter_loads_total", result="ok") == 5


def held(vllm_url: str) -> set[str]:
    """The adapter versions vLLM holds now (its names are NAME@N+<digest prefix>)."""
    data = httpx.get(f"{vllm_url}/v1/models", timeout=10).json()["data"]
    return {m["id"].split("+")[0] for m in data if m.get("parent")}
