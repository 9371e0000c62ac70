"""The right LoRA is applied: greedy output through the gateway (vLLM, float32) equals
greedy output of transformers + peft (float32) for the same adapter version."""

from __future__ import annotations

import sys

import httpx
import pytest

from tests.conftest import ADAPTERS, BASE_NAME, EXAMPLES
from tests.server.conftest import RunningGateway

sys.path.insert(0, str(EXAMPLES))
import evaluate

pytestmark = pytest.mark.vllm

# Agreement demanded per model, as a fraction of eval prompts with identical text.
# Measured: see README ("Parity with PEFT"); float32 on both sides.
MIN_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def reference() -> dict[str, list[str]]:
    zoo = evaluate.load_zoo()
    prompts = [r["messages"] for r in evaluate.load_eval()]
    out = {BASE_NAME: evaluate.greedy(zoo, prompts, None)}
    for name in ADAPTERS:
        out[name] = evaluate.greedy(zoo, prompts, name)
    return out


@pytest.mark.parametrize("model", [BASE_NAME, *ADAPTERS])
def test_gateway_matches_peft(
    gateway: RunningGateway, reference: dict[str, list[str]], model: str
) -> None:
    records = evaluate.load_eval()
    got = []
    with httpx.Client(base_url=gateway.url, timeout=120) as c:
        for r in records:
            resp = c.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": r["messages"],
                    "temperature": 0,
                    "max_tokens": evaluate.MAX_NEW_TOKENS,
                    "response_format": {"type": "text"},
                },
            )
            assert resp.status_code == 200, resp.text
            got.append(resp.json()["choices"][0]["message"]["content"])
    same = sum(g == w for g, w in zip(got, reference[model], strict=True))
    print(f"parity {model}: {same}/{len(records)} identical")
    mismatches = [(g, w) for g, w in zip(got, reference[model], strict=True) if g != w]
    assert same / len(records) >= MIN_AGREEMENT, mismatches[:3]
