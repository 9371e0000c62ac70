"""The OpenAI wire format, as far as the gateway reads it.

Only fields the gateway acts on are declared; every other field is accepted and
forwarded to vLLM untouched (as vLLM itself accepts them), so the official clients and
vLLM's own extensions keep working.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.errors import InvalidRequestError

Endpoint = Literal["chat", "completions"]
PATHS: dict[Endpoint, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=512)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=16)
    response_format: dict[str, Any] | None = None
    user: str | None = None
    stream_options: dict[str, Any] | None = None

    def token_budget(self) -> int | None:
        return self.max_tokens


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]


MODELS: dict[Endpoint, type[_Request]] = {"chat": ChatRequest, "completions": CompletionRequest}


def parse(endpoint: Endpoint, raw: bytes) -> tuple[dict[str, Any], _Request]:
    """The body as a dict (to forward) and as a checked request (to act on)."""
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise InvalidRequestError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        req = MODELS[endpoint].model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequestError(f"{param}: {first['msg']}", param=param) from None
    return body, req


def text_of(endpoint: Endpoint, choice: dict[str, Any]) -> str:
    """A non-streamed choice's generated text."""
    if endpoint == "chat":
        return str((choice.get("message") or {}).get("content") or "")
    return str(choice.get("text") or "")


def delta_of(endpoint: Endpoint, choice: dict[str, Any]) -> str:
    """A streamed chunk's new text."""
    if endpoint == "chat":
        return str((choice.get("delta") or {}).get("content") or "")
    return str(choice.get("text") or "")
