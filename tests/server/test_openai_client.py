"""The official `openai` Python client works unchanged against the gateway."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import BASE_NAME, EXAMPLES
from tests.server.conftest import RunningGateway

pytestmark = pytest.mark.vllm

RECORD = json.loads((EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()[1])


@pytest.fixture()
def client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def test_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {BASE_NAME, "extract", "triage@1", "support-v1@production"} <= ids


def test_chat_and_structured(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="extract", messages=RECORD["messages"], temperature=0, max_tokens=128
    )
    assert r.model == "extract@1"
    assert set(json.loads(r.choices[0].message.content or "")) >= {"name"}
    raw = client.chat.completions.with_raw_response.create(
        model="triage", messages=RECORD["messages"], max_tokens=8
    )
    assert raw.headers["x-loraport-adapter"] == "triage@1"


def test_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="support-v1",
        messages=RECORD["messages"],
        temperature=0,
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completions(client: openai.OpenAI) -> None:
    r = client.completions.create(model=BASE_NAME, prompt="Hello", max_tokens=8, temperature=0)
    assert r.choices[0].text


def test_errors_raise_the_clients_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=RECORD["messages"])
    assert e.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="extract", messages=RECORD["messages"], max_tokens=3)


def test_stream_error_event_raises(client: openai.OpenAI) -> None:
    """A constrained stream that ends non-conforming ends in an error, not a success."""
    stream = client.chat.completions.create(
        model="extract", messages=RECORD["messages"], max_tokens=3, stream=True
    )
    with pytest.raises(openai.APIError) as e:
        list(stream)
    assert e.value.code == "json_truncated"
