"""The request path: check, resolve, load, forward, validate, record.

One code path serves `/v1/completions` and `/v1/chat/completions`, streamed or not,
for the base model and every adapter version.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, TypeVar

import anyio
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.adapters import AdapterSlots
from server.admission import InFlight, Limits, estimate
from server.auth import authenticate, authorize
from server.call import Answers, Call, Outcome
from server.canary import SESSION_HEADER, sticky_key
from server.containment import Containment, client_shaped, response_problem
from server.dispatch import Dispatch
from server.errors import (
    BackendError,
    GatewayError,
    InvalidRequestError,
    RequestTooLargeError,
    StructuredOutputError,
    to_gateway_error,
)
from server.http_protocol import DISCONNECT
from server.metrics import Metrics
from server.protocol import PATHS, Endpoint, parse, renamed, text_of
from server.resolver import Resolver, Target
from server.settings import GatewaySettings
from server.streaming import ClosingStreamingResponse, relay
from server.structured import Constraint, check_result, constraint_for
from server.vllm_http import json_object

log = logging.getLogger("loraport.gateway")
T = TypeVar("T")


async def _unless_disconnected(scope: Scope, receive: Receive, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None if the client disconnected first: then `work` is cancelled,
    which closes its upstream connection, and vLLM aborts the request (its handlers watch
    for disconnects).

    `work` runs in the caller's task, so the request reaches vLLM in this step of the loop
    and its answer comes back without a task switch (bench/README.md, "One write per
    answer"). The connection tells when its client leaves (server/http_protocol.py's
    `DISCONNECT`, under `gateway serve`); under another server a watcher task waits for
    the disconnect message instead (the request body has been read, so the next ASGI
    message is the disconnect)."""
    this = asyncio.current_task()
    assert this is not None
    connection = scope.get("extensions", {}).get(DISCONNECT)
    watcher: asyncio.Future[None] | None = None
    waiting = True
    left = False

    def on_left() -> None:
        nonlocal left
        if waiting:  # not a watcher's callback run after `work` was done
            left = True
            this.cancel()

    if connection is not None:
        if not connection.watch(on_left):
            _close(work)
            return None
    else:
        watcher = asyncio.ensure_future(_disconnected(receive))
        watcher.add_done_callback(
            lambda w: None if w.cancelled() or w.exception() is not None else on_left()
        )
    try:
        return await work
    except BaseException:
        if left:  # whatever `work` raised on its way out: the client is gone
            return None
        raise
    finally:
        waiting = False
        if watcher is None:
            connection.unwatch()
        else:
            watcher.cancel()
        if left:
            this.uncancel()


def _close(work: Awaitable[Any]) -> None:
    """A coroutine that will not be awaited, closed (no 'never awaited' warning)."""
    close = getattr(work, "close", None)
    if close is not None:
        close()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


_WANTED = (b"authorization", SESSION_HEADER.encode(), b"content-length")


def _headers(scope: Scope) -> dict[bytes, str]:
    """The few request headers the request path reads (one pass over the raw list)."""
    found: dict[bytes, str] = {}
    for k, v in scope["headers"]:
        if k in _WANTED:
            found.setdefault(k, v.decode("latin-1"))
    return found


class JsonAnswer:
    """A whole JSON answer as two ASGI messages, its headers built once (starlette's
    Response would build and check them again per request), and `after`: the request's
    bookkeeping, done once the answer is on its way so that it does not delay it."""

    __slots__ = ("adapter", "after", "body", "headers")

    def __init__(self, body: bytes, target: Target, after: Callable[[], None]) -> None:
        self.body = body
        self.after = after
        self.adapter = target.ref.encode()
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-loraport-adapter", self.adapter),
            (b"x-loraport-arm", target.arm.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:
            self.after()


def error_response(e: GatewayError, target: Target | None = None) -> Response:
    headers = {**e.headers, **(target_headers(target) if target else {})}
    return Response(
        json.dumps(e.body()),
        status_code=e.status,
        headers=headers,
        media_type="application/json",
    )


def target_headers(target: Target) -> dict[str, str]:
    return {"x-loraport-adapter": target.ref, "x-loraport-arm": target.arm}


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        resolver: Resolver,
        slots: list[AdapterSlots],
        metrics: Metrics,
        containment: Containment,
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.metrics = metrics
        self.containment = containment
        self.dispatch = Dispatch(settings, slots, metrics, containment)
        self.limits = Limits.of(settings)
        self.in_flight = InFlight(self.limits, metrics)

    async def serve(self, scope: Scope, receive: Receive, endpoint: Endpoint) -> ASGIApp:
        """The answer to one request (an ASGI app to call with the same scope): the two
        hot routes come here straight from server/app.py, past FastAPI's routing."""
        started = time.perf_counter()
        outcome = Outcome()
        target: Target | None = None
        admitted = False
        try:
            headers = _headers(scope)
            key = authenticate(self.settings.api_keys, headers.get(b"authorization"))
            raw = await self._read_body(receive, headers.get(b"content-length"))
            body, req = parse(endpoint, raw)
            budget = req.token_budget()
            forward = self._budgeted(body, budget)
            outcome.work = estimate(req, budget or self.settings.default_max_tokens, self.limits)
            sticky = sticky_key(req.user, headers.get(_WANTED[1]))
            target = await self.resolver.resolve(req.model, sticky)
            outcome.series = target.series
            authorize(key, target.name)
            outcome.concurrency = self.in_flight.enter(outcome.work, outcome.series)
            admitted = True
            schema = target.adapter.schema if target.adapter else None
            constraint = constraint_for(req.response_format, schema)
            if constraint is not None:
                forward.pop("response_format", None)
                forward["structured_outputs"] = constraint.vllm_params()
            call = Call(endpoint, forward, target, outcome, started)
            if req.stream:
                wants_usage = bool((req.stream_options or {}).get("include_usage"))
                forward["stream_options"] = {**(req.stream_options or {}), "include_usage": True}
                response = await self._stream(call, constraint, wants_usage)
                admitted = False  # the stream releases its own slot when it ends
                return response
            done = await _unless_disconnected(scope, receive, self._unary(call, constraint))
            if done is None:  # the client left: the upstream request was closed (aborted)
                outcome.status = 499
                return Response(status_code=499)
            answer, look = done
            admitted = False  # released once the answer is sent
            after = partial(self._answered, call, look)
            return JsonAnswer(answer, target, after)
        except ClientDisconnect:  # gone while sending its body: nothing was started, and it
            # is counted under the unknown series (its model was never read)
            outcome.status = 499
            return Response(status_code=499)
        except Exception as e:
            error = to_gateway_error(e)
            if error is not e:
                log.exception("request failed: %s", error.message)
            outcome.error = error
            return error_response(error, target)
        finally:
            if admitted:
                self.in_flight.leave(outcome.work, outcome.series)
            if admitted or outcome.error is not None or outcome.status == 499:
                self._record(endpoint, outcome, started)

    async def _read_body(self, receive: Receive, declared: str | None) -> bytes:
        limit = self.settings.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestTooLargeError(f"the request body is over the {limit}-byte limit")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(f"the request body is over the {limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _budgeted(self, body: dict[str, Any], budget: int | None) -> dict[str, Any]:
        limit = self.max_tokens_limit()
        if budget is not None and budget > limit:
            param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
            raise InvalidRequestError(
                f"{param} is {budget}; this gateway allows at most {limit} "
                "(the smaller of its max_tokens_limit and the model's context length)",
                param=param,
            )
        forward = dict(body)
        if budget is None:
            forward["max_tokens"] = min(self.settings.default_max_tokens, limit)
        return forward

    def max_tokens_limit(self) -> int:
        """`max_tokens_limit`, or the served context length where a backend told a smaller
        one (a request for more could never be served whole)."""
        served = self.dispatch.max_model_len()
        limit = self.settings.max_tokens_limit
        return limit if served is None else min(limit, served)

    async def _unary(
        self, call: Call, constraint: Constraint | None
    ) -> tuple[bytes, Callable[[], None] | None]:
        """The answer's body for the client, and what is left to look at once it is sent.
        An answer with no JSON contract is passed on as vLLM wrote it, only its `model`
        renamed (server.protocol.renamed); its usage and text are read after it is sent.
        A constrained one is parsed and checked before anything is sent."""
        slots, raw = await self.dispatch.unary(call.endpoint, call.forward, call.target)
        if constraint is None:
            body = renamed(raw, str(call.forward["model"]), call.target.ref)
            if body is not None:
                return body, partial(self._read_answer, call, slots, raw)
        data = json_object(PATHS[call.endpoint], raw)
        self._take(call, slots, data, constraint)
        data["model"] = call.target.ref
        return json.dumps(data).encode(), None

    def _take(
        self, call: Call, slots: AdapterSlots, data: dict[str, Any], constraint: Constraint | None
    ) -> None:
        """A whole answer's usage for the metrics, and its texts judged (`_judge`)."""
        usage = data.get("usage") or {}
        call.outcome.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        call.outcome.completion_tokens = int(usage.get("completion_tokens") or 0)
        choices = data.get("choices", [])
        answers = {
            i: (text_of(call.endpoint, c), c.get("finish_reason")) for i, c in enumerate(choices)
        }
        self._judge(call, slots, constraint, answers)

    def _read_answer(self, call: Call, slots: AdapterSlots, raw: bytes) -> None:
        """An answer passed on unparsed, read once it is sent (usage, degeneracy)."""
        try:
            self._take(call, slots, json_object(PATHS[call.endpoint], raw), None)
        except (BackendError, AttributeError, TypeError, ValueError) as e:
            log.warning("could not read vLLM's answer after passing it on: %s", e)

    def _answered(self, call: Call, look: Callable[[], None] | None) -> None:
        """After a whole answer is sent: what is left to read of it, then the request's
        slot and metrics."""
        try:
            if look is not None:
                look()
        finally:
            self.in_flight.leave(call.outcome.work, call.outcome.series)
            self._record(call.endpoint, call.outcome, call.started)

    async def _stream(
        self, call: Call, constraint: Constraint | None, wants_usage: bool
    ) -> Response:
        stack = AsyncExitStack()
        slots, upstream = await self.dispatch.open_stream(
            stack, call.endpoint, call.forward, call.target
        )
        self.containment.started(slots, call.target)
        closed = False

        async def finish() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            with anyio.CancelScope(shield=True):
                try:
                    await stack.aclose()  # closing upstream may fail; the counts must not leak
                finally:
                    slots.backend.state.in_flight -= 1
                    self.containment.ended(slots, call.target)
                    self.in_flight.leave(call.outcome.work, call.outcome.series)
                    self._record(call.endpoint, call.outcome, call.started)

        judge = partial(self._judge, call, slots, constraint)
        events = relay(upstream, call, wants_usage, judge, finish)
        return ClosingStreamingResponse(events, finish, target_headers(call.target))

    def _judge(
        self, call: Call, slots: AdapterSlots, constraint: Constraint | None, answers: Answers
    ) -> None:
        """Every choice's whole text, streamed or not: a degenerate answer is counted and
        containment checks its backend at once; then a result that breaks its JSON
        contract is refused (raises)."""
        forced = client_shaped(call.forward)
        if response_problem(list(answers.values()), call.outcome.completion_tokens, forced):
            call.outcome.degenerate = True
            self.containment.suspect(slots, call.target)
        if constraint is not None:
            for text, finish_reason in answers.values():
                check_result(constraint, text, finish_reason)

    def _record(self, endpoint: str, o: Outcome, started: float) -> None:
        m = self.metrics
        r = m.of(o.series, endpoint)
        elapsed = time.perf_counter() - started
        status = o.error.status if o.error is not None else o.status
        if status == 200:
            r.answered.inc()
        else:
            s = o.series.values()
            m.requests.labels(*s, endpoint, str(status)).inc()
            if o.error is not None:
                m.child(m.errors, *s, o.error.type).inc()
                if isinstance(o.error, StructuredOutputError):
                    m.child(m.structured_failures, *s, o.error.reason).inc()
        if o.degenerate:
            r.degenerate.inc()
        r.latency.observe(elapsed)
        if o.prompt_tokens:
            r.prompt_tokens.inc(o.prompt_tokens)
        if o.completion_tokens:
            r.completion_tokens.inc(o.completion_tokens)
        if o.ttft_s is not None:
            m.child(m.ttft, *o.series.values()).observe(o.ttft_s)
            if o.completion_tokens > 1:
                tpot = (elapsed - o.ttft_s) / (o.completion_tokens - 1)
                m.child(m.tpot, *o.series.values()).observe(tpot)
        price = self.settings.price_per_accelerator_hour
        if price > 0 and status < 500:
            cost = elapsed * price / 3600 / max(1, o.concurrency)
            m.child(m.cost, *o.series.values()).observe(cost)
