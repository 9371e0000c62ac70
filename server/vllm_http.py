"""One vLLM OpenAI server, spoken to over HTTP: the only way the gateway reaches vLLM.

The same code fronts the local server that `gateway serve` launches and any remote
vLLM Service, so a vLLM crash is a network error here, never a gateway crash.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from server import wire_json
from server.errors import (
    AdapterLoadError,
    BackendError,
    BackendUnavailableError,
    GatewayError,
    InvalidRequestError,
    UnsupportedSchemaError,
)
from server.http1 import Http1Error, Http1Pool

_GRAMMAR_HINTS = ("grammar", "not supported", "unsupported", "schema")
# What vLLM 0.32 answers (400) when a resolver plugin found an adapter it then failed to
# load; the reason is only in its log.
_FOUND_NOT_LOADED = "was found but could not be loaded"


@dataclass
class BackendState:
    """What the gateway knows of one backend right now. Only this class changes it: the
    probe, the supervisor and the request path call its transitions."""

    up: bool = False
    degraded: bool = False
    generation: int = 0
    """Bumped whenever the server restarts: every adapter it held is gone."""
    model_id: str | None = None
    """The name vLLM serves the base model under."""
    max_model_len: int | None = None
    base_answer: str | None = None
    """The base model's greedy answer to the probe, from this server's first good probe."""
    in_flight: int = 0
    """This gateway's requests running there."""
    others_in_flight: int = 0
    """Requests of other gateways there, at the last sample (server/backend_sync.py)."""
    draining: bool = False
    """Containment is checking the engine alone: new requests go elsewhere (or get 503)."""
    detail: str = "starting"
    placing: bool = False
    """An embedded server's supervisor has yet to place its processes on the host's cores
    (server/placement.py): out of rotation until it has, however well it answers."""
    probing: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)
    """Held while a probe whose verdict needs the engine to itself runs: a round of the
    periodic probe, or a drained check of containment. Two such probes at once would
    each see the other's tokens, and neither could judge the engine."""

    @property
    def ready(self) -> bool:
        return self.up and not self.degraded and not self.placing and self.model_id is not None

    def restarted(self, detail: str) -> None:
        """The server went away (or was replaced): whatever it held is gone."""
        self.up, self.model_id, self.base_answer = False, None, None
        self.others_in_flight = 0
        self.generation += 1
        self.detail = detail

    def launched(self) -> None:
        """An embedded server was started: held out of rotation until `placed`."""
        self.placing = True

    def placed(self) -> None:
        self.placing = False

    def unreachable(self, detail: str) -> None:
        """A request could not reach the server at all: out of rotation at once, until its
        probe finds it answering again (a server that comes back is a new one)."""
        if self.up:
            self.restarted(detail)

    def answering_health(self, up: bool) -> None:
        if self.up and not up:
            self.restarted("not answering /health")
        self.up = up

    def serving(self, model_id: str, max_model_len: int | None) -> None:
        self.up, self.model_id, self.max_model_len = True, model_id, max_model_len

    def judged(self, degraded: bool, detail: str) -> None:
        self.degraded, self.detail = degraded, detail

    def sampled(self, others_in_flight: int) -> None:
        self.others_in_flight = others_in_flight


@dataclass(frozen=True)
class EngineStats:
    """vLLM's own view of its load, from its /metrics."""

    running: float
    waiting: float
    kv_cache_usage: float
    generation_tokens: float
    prompt_tokens: float = 0.0


class LoraNotLoadedError(BackendError):
    """vLLM does not know the adapter name: it restarted or evicted it on its own."""


class NotSentError(BackendUnavailableError):
    """The request never reached vLLM whole (connection refused, or closed before the
    request was written): it cannot be running there, so another backend may serve it."""


class VllmBackend:
    """The client side of one vLLM server. Whole answers (the request path's and the
    probe's) go over server/http1.py's lean client; streams and the rest over aiohttp
    (half httpx's cost per call, measured in bench/README.md). Create it inside the
    running event loop."""

    def __init__(
        self,
        url: str,
        label: str,
        *,
        timeout_s: float,
        max_connections: int = 256,
        unix_socket: str | None = None,
    ):
        """`unix_socket`: reach the server over that socket (the embedded default's, see
        server/supervisor.py); `url` then only gives the Host header."""
        self.url = url.rstrip("/")
        self.label = label
        self.state = BackendState()
        self._timeout_s = timeout_s
        self._http1 = _pool(self.url, unix_socket, max_connections)
        # A bound on connecting and on each read; none on a whole stream, which may be long.
        timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=timeout_s)
        self._session = aiohttp.ClientSession(
            self.url,
            timeout=timeout,
            connector=_connector(unix_socket, max_connections),
            read_bufsize=1 << 20,  # a streamed line (one SSE event) may be up to 2 MiB
        )

    async def aclose(self) -> None:
        await self._http1.aclose()
        await self._session.close()

    async def health(self) -> bool:
        try:
            async with self._session.get("/health", timeout=aiohttp.ClientTimeout(5.0)) as r:
                await r.read()
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def discover_model(self) -> tuple[str, int | None]:
        """The base model's id on this server (the entry of /v1/models without a parent)
        and its context length."""
        data = await self._json("GET", "/v1/models")
        for entry in data.get("data", []):
            if not entry.get("parent"):
                length = entry.get("max_model_len")
                return str(entry["id"]), length if isinstance(length, int) else None
        raise BackendError(f"backend {self.label} lists no base model")

    async def engine_stats(self, timeout_s: float = 5.0) -> EngineStats | None:
        """Requests running and waiting, KV-cache use and tokens generated so far; None
        when vLLM does not answer in time."""
        try:
            async with self._session.get("/metrics", timeout=aiohttp.ClientTimeout(timeout_s)) as r:
                text = (await r.read()).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError):
            return None
        return parse_engine_stats(text)

    async def lora_names(self) -> set[str]:
        data = await self._json("GET", "/v1/models")
        return {str(e["id"]) for e in data.get("data", []) if e.get("parent")}

    async def load_lora(self, name: str, path: str) -> None:
        """Register an adapter under `name`; a name vLLM already holds counts as loaded
        (names carry the content digest, so the same name is the same weights)."""
        body = {"lora_name": name, "lora_path": path}
        try:
            await self._ok("POST", "/v1/load_lora_adapter", body)
        except InvalidRequestError as e:
            if name not in await self.lora_names():
                raise AdapterLoadError(e.message) from None

    async def unload_lora(self, name: str) -> None:
        await self._ok("POST", "/v1/unload_lora_adapter", {"lora_name": name})

    async def metrics_text(self) -> str:
        return (await self._send("GET", "/metrics")).text

    async def generate(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return json_object(path, await self.answer(path, body))

    async def answer(self, path: str, body: dict[str, Any]) -> bytes:
        """A successful answer's body as vLLM sent it (the request path passes it on
        without a parse where it can: server/serving.py). Leaving before it arrives (the
        caller cancelled: its client left) closes the connection, and vLLM aborts the
        request."""
        try:
            status, content = await self._http1.post(path, _encode(body), self._timeout_s)
        except TimeoutError as e:
            raise BackendError(f"vLLM backend {self.label} timed out", code="timeout") from e
        except Http1Error as e:
            unavailable = BackendUnavailableError if e.sent else NotSentError
            raise unavailable(f"vLLM backend {self.label} unreachable: {e}") from e
        if status != 200:
            raise _error_from(Answer(status, content), body)
        return content

    @asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        """The lines of an open streaming answer. Leaving the block before the answer has
        ended closes the connection, and vLLM aborts the request."""
        with _mapped(self.label):
            resp = await self._session.post(path, data=_encode(body), headers=_JSON)
        try:
            if resp.status != 200:
                with _mapped(self.label):
                    answer = Answer(resp.status, await resp.read())
                raise _error_from(answer, body)
            yield _lines(resp, self.label)
        finally:
            resp.close()  # drops the connection unless the body was read to its end

    async def _send(self, method: str, path: str, body: Any = None) -> Answer:
        data = None if body is None else _encode(body)
        for attempt in (0, 1):
            try:
                with _mapped(self.label):
                    async with self._session.request(method, path, data=data, headers=_JSON) as r:
                        return Answer(r.status, await r.read())
            except BackendUnavailableError as e:
                # The request never reached vLLM whole (a pooled connection it had closed):
                # sending it again cannot run it twice.
                if attempt or not _write_failed(e.__cause__):
                    raise
        raise AssertionError("unreachable")

    async def _ok(self, method: str, path: str, body: Any = None) -> Answer:
        r = await self._send(method, path, body)
        if r.status_code != 200:
            raise _error_from(r, body)
        return r

    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return json_object(path, (await self._ok(method, path, body)).content)


def json_object(path: str, content: bytes) -> dict[str, Any]:
    """vLLM's answer to `path` as a JSON object, or the BackendError that says it is not."""
    try:
        data = wire_json.loads(content)
    except (ValueError, RecursionError) as e:
        raise BackendError(f"vLLM answered {path} with a body that is not JSON") from e
    if not isinstance(data, dict):
        raise BackendError(f"vLLM answered {path} with JSON that is not an object")
    return data


def _pool(url: str, unix_socket: str | None, limit: int) -> Http1Pool:
    parts = urlsplit(url)
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    port = parts.port or (443 if tls else 80)
    return Http1Pool(parts.netloc, host=parts.hostname or "", port=port,
                     unix_socket=unix_socket, tls=tls, limit=limit)  # fmt: skip


def _connector(unix_socket: str | None, limit: int) -> aiohttp.BaseConnector:
    # vLLM's uvicorn drops idle connections after 5 s; a pooled connection kept longer
    # races that close and fails a large body's write ("Can not write request body"), so
    # the pool lets go first. The same holds over a Unix socket.
    if unix_socket is not None:
        return aiohttp.UnixConnector(path=unix_socket, limit=limit, keepalive_timeout=3.0)
    return aiohttp.TCPConnector(limit=limit, keepalive_timeout=3.0)


@dataclass(frozen=True)
class Answer:
    """A whole (non-streamed) answer from vLLM."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


_JSON = {"content-type": "application/json"}


def _encode(body: Any) -> bytes:
    return wire_json.dumps(body)


async def _lines(resp: aiohttp.ClientResponse, label: str) -> AsyncIterator[str]:
    try:
        async for raw in resp.content:
            yield raw.decode("utf-8").rstrip("\r\n")
    except TimeoutError as e:
        raise BackendError(f"vLLM backend {label} timed out mid-stream", code="timeout") from e
    except (aiohttp.ClientError, HttpProcessingError) as e:  # e.g. a line over the limit
        raise BackendError(
            f"vLLM backend {label} failed mid-stream: {e}", code="backend_failed"
        ) from e


def _unsent(cause: BaseException | None) -> bool:
    """The request cannot have reached vLLM whole: the connection was refused, or was
    closed before the request was written."""
    if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ClientConnectionResetError):
        return True
    return _write_failed(cause)


def _write_failed(cause: BaseException | None) -> bool:
    """A pooled connection the server had closed failed the request's write."""
    return isinstance(cause, aiohttp.ClientOSError) and "Can not write request body" in str(cause)


_STATS = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:generation_tokens_total": "generation_tokens",
    "vllm:prompt_tokens_total": "prompt_tokens",
}


def parse_engine_stats(text: str) -> EngineStats:
    """The few series of vLLM's Prometheus text the gateway reads (summed over engines)."""
    found = dict.fromkeys(_STATS.values(), 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        field = _STATS.get(name)
        if field is not None:
            try:
                found[field] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return EngineStats(**found)


@contextmanager
def _mapped(label: str) -> Iterator[None]:
    """Transport failures talking to vLLM, as gateway errors (one mapping for all calls)."""
    try:
        yield
    except TimeoutError as e:
        raise BackendError(f"vLLM backend {label} timed out", code="timeout") from e
    except aiohttp.ClientError as e:
        unavailable = NotSentError if _unsent(e) else BackendUnavailableError
        raise unavailable(f"vLLM backend {label} unreachable: {e}") from e


def _error_from(r: Answer, body: Any) -> GatewayError:
    """vLLM's error answer as one of ours (vLLM speaks the OpenAI envelope too)."""
    try:
        err = json.loads(r.content).get("error", {})
        message, param = str(err.get("message", r.text)), err.get("param")
    except (ValueError, AttributeError):
        message, param = r.text[:500], None
    structured = isinstance(body, dict) and "structured_outputs" in body
    if r.status_code == 404:
        return LoraNotLoadedError(message)
    if r.status_code == 400 and _FOUND_NOT_LOADED in message:
        return AdapterLoadError(message)
    if r.status_code in (400, 422):
        if structured and any(h in message.lower() for h in _GRAMMAR_HINTS):
            return UnsupportedSchemaError(
                f"the JSON schema uses features the grammar backend cannot enforce: {message}",
                param="response_format",
            )
        return InvalidRequestError(message, param=param if isinstance(param, str) else None)
    if r.status_code == 500 and structured and any(h in message.lower() for h in _GRAMMAR_HINTS):
        return UnsupportedSchemaError(
            f"vLLM could not compile a grammar for the JSON schema: {message}",
            param="response_format",
        )
    if r.status_code == 503:
        return BackendUnavailableError(f"vLLM backend unavailable: {message}")
    return BackendError(f"vLLM answered {r.status_code}: {message}")
