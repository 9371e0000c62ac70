"""The OpenAI wire format, as far as the gateway reads it.

Fields the gateway acts on, and the common sampling fields, are declared with the types
OpenAI's API gives them and checked strictly: `"max_tokens": "5"`, `"n": true` or
`"temperature": "hot"` are the gateway's own 400 naming the field, never coerced and never
vLLM's raw validation dump. Every other field is accepted and forwarded to vLLM untouched
(as vLLM itself accepts them), so the official clients and vLLM's extensions keep working.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from server import wire_json
from server.errors import InvalidRequestError

Endpoint = Literal["chat", "completions"]
PATHS: dict[Endpoint, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}

SInt = Annotated[int, Strict()]
SBool = Annotated[bool, Strict()]
SStr = Annotated[str, Strict()]
# JSON has one number type: an integer is a fine temperature, a string or a bool is not.
SNumber = Annotated[float, Strict()] | SInt


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Strict(), Field(min_length=1, max_length=512)]
    stream: SBool = False
    max_tokens: Annotated[int, Strict(), Field(ge=1)] | None = None
    n: Annotated[int, Strict(), Field(ge=1, le=16)] = 1
    response_format: dict[str, Any] | None = None
    user: SStr | None = None
    stream_options: dict[str, Any] | None = None
    temperature: SNumber | None = None
    top_p: SNumber | None = None
    presence_penalty: SNumber | None = None
    frequency_penalty: SNumber | None = None
    seed: SInt | None = None
    stop: SStr | list[SStr] | None = None
    ignore_eos: SBool | None = None

    def token_budget(self) -> int | None:
        return self.max_tokens

    def prompt_count(self) -> int:
        return 1

    def prompt_size(self) -> tuple[int, int]:
        """(characters of prompt text, prompt token ids): admission estimates tokens."""
        return 0, 0


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: SStr | list[dict[str, Any]] | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Strict(), Field(ge=1)] | None = None

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def prompt_size(self) -> tuple[int, int]:
        chars = sum(
            len(m.content) if isinstance(m.content, str) else len(json.dumps(m.content))
            for m in self.messages
        )
        return chars, 0


class CompletionRequest(_Request):
    prompt: SStr | list[SStr] | list[SInt] | list[list[SInt]]

    def prompt_count(self) -> int:
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return 1
        return max(1, len(p))

    def prompt_size(self) -> tuple[int, int]:
        p = self.prompt
        if isinstance(p, str):
            return len(p), 0
        chars = sum(len(x) for x in p if isinstance(x, str))
        ids = sum(len(x) if isinstance(x, list) else 1 for x in p if not isinstance(x, str))
        return chars, ids


MODELS: dict[Endpoint, type[_Request]] = {"chat": ChatRequest, "completions": CompletionRequest}
Request = _Request


def parse(endpoint: Endpoint, raw: bytes) -> tuple[dict[str, Any], _Request]:
    """The body as a dict (to forward) and as a checked request (to act on)."""
    try:
        body, lax = wire_json.loads_lax(raw)
    except RecursionError:
        raise InvalidRequestError("the request body is nested too deeply") from None
    except ValueError as e:
        raise InvalidRequestError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    if lax and wire_json.non_finite(body):
        raise InvalidRequestError(
            "the request body is not valid JSON: NaN and Infinity are not JSON numbers "
            "(nor is a number past a double's range)"
        )
    try:
        req = MODELS[endpoint].model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        loc = [str(p) for p in first["loc"]]
        # A union's failure names the member type it tried last; the field is what counts.
        param = ".".join(p for p in loc if not _is_type_tag(p)) or None
        raise InvalidRequestError(f"{param}: {first['msg']}", param=param) from None
    except RecursionError:
        raise InvalidRequestError("the request body is nested too deeply") from None
    return body, req


def _is_type_tag(part: str) -> bool:
    return part in {"str", "int", "float", "bool", "list[str]", "list[int]"} or part.startswith(
        ("list[", "function-", "constrained-")
    )


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


def renamed(answer: bytes, sent: str, ref: str) -> bytes | None:
    """vLLM's whole answer with its top-level `"model"` (the name it was `sent` under) made
    `ref`, without a parse and re-encode of the body; None where the answer is not laid
    out as vLLM's serialiser writes it (compact, `"model"` among the first keys, before
    any nested value, the object closed): then the caller parses it.

    Safe because `"model":` followed by a quote can only be a key in raw JSON (inside a
    string its quotes are escaped), and with no `{` or `[` before it, a top-level one."""
    key = _model_field(sent)
    at = answer.find(key, 0, 512)
    if at < 0 or answer[:1] != b"{" or answer.rstrip()[-1:] != b"}":
        return None
    head = answer[1:at]
    if b"{" in head or b"[" in head:
        return None
    return b"".join((answer[:at], _model_field(ref), answer[at + len(key) :]))


@functools.lru_cache(maxsize=4096)
def _model_field(name: str) -> bytes:
    """`"model":` and `name` as json writes it (the names a gateway serves are few)."""
    return b'"model":' + json.dumps(name).encode()
