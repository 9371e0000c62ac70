"""Admission: how much work a request asks for, and whether it may start now.

A request's work is the tokens it may put through vLLM: for each of its `n` x prompts
sequences, its token budget, plus its prompt (estimated). Four bounds, in this order:

    prompts in the request       > max_prompts_per_request   400 too_many_prompts
    its work alone               > max_tokens_in_flight      400 too_much_work
    requests in flight           >= max_in_flight            429 too_many_requests
    work in flight + its work    > max_tokens_in_flight      429 too_many_requests

A request that could never be admitted is the client's mistake (400); one that cannot be
admitted now should be retried (429, `Retry-After`). `estimate` and `admit` are pure: the
request or numbers in, a number or the next `Load` out, or the gateway's typed error.
`InFlight` is the one owner of the counts in flight and of their gauges.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import InvalidRequestError, TooManyRequestsError
from server.loop_metrics import Cell
from server.metrics import Metrics, Series
from server.protocol import Request
from server.settings import GatewaySettings

PROMPT_CHARS_PER_TOKEN = 4
"""A prompt's tokens are estimated from its characters (English BPE averages about four
characters a token; the demo tokenizer 3.4 on its eval prompts)."""


@dataclass(frozen=True)
class Limits:
    """The settings' admission bounds."""

    max_prompts_per_request: int
    max_tokens_in_flight: int
    max_in_flight: int

    @classmethod
    def of(cls, s: GatewaySettings) -> Limits:
        return cls(s.max_prompts_per_request, s.max_tokens_in_flight, s.max_in_flight)


@dataclass(frozen=True)
class Load:
    """What is in flight: admitted requests, and their work in tokens."""

    requests: int = 0
    tokens: int = 0


def estimate(req: Request, budget: int, limits: Limits) -> int:
    """The tokens one request may put through vLLM: per sequence, its prompt (text
    estimated at PROMPT_CHARS_PER_TOKEN characters a token, token ids counted exactly)
    plus its `budget` (max_tokens). Raises InvalidRequestError (400) for a request no
    load could admit."""
    prompts = req.prompt_count()
    if prompts > limits.max_prompts_per_request:
        raise InvalidRequestError(
            f"prompt is a list of {prompts} prompts; this gateway allows at most "
            f"{limits.max_prompts_per_request} per request (send several requests)",
            param="prompt",
            code="too_many_prompts",
        )
    chars, token_ids = req.prompt_size()
    prompt_tokens = -(-chars // PROMPT_CHARS_PER_TOKEN) + token_ids
    work = req.n * (prompt_tokens + prompts * budget)
    if work > limits.max_tokens_in_flight:
        raise InvalidRequestError(
            f"this request asks for about {work} tokens of work (prompts x n x max_tokens, "
            f"plus its prompt); this gateway admits at most "
            f"{limits.max_tokens_in_flight} at once: lower max_tokens, n or the "
            "number of prompts",
            param="max_tokens",
            code="too_much_work",
        )
    return work


def admit(load: Load, work: int, limits: Limits) -> Load:
    """The load with one more request of `work` tokens in flight. Raises
    TooManyRequestsError (429) when it does not fit beside `load` now."""
    if load.requests >= limits.max_in_flight:
        raise TooManyRequestsError(
            f"{load.requests} requests in flight, the limit is {limits.max_in_flight}"
        )
    if load.tokens + work > limits.max_tokens_in_flight:
        raise TooManyRequestsError(
            f"{load.tokens} tokens of work in flight; this request's "
            f"{work} would pass the limit of {limits.max_tokens_in_flight}"
        )
    return Load(load.requests + 1, load.tokens + work)


def release(load: Load, work: int) -> Load:
    """The load once an admitted request of `work` tokens has finished."""
    return Load(load.requests - 1, load.tokens - work)


class InFlight:
    """The gateway's load: the one place it changes. Its two gauges read it when scraped
    (nothing to set on each request)."""

    def __init__(self, limits: Limits, metrics: Metrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self.load = Load()
        self._gauges: dict[Series, Cell] = {}
        metrics.in_flight.set_function(lambda: self.load.requests)
        metrics.tokens_in_flight.set_function(lambda: self.load.tokens)

    def enter(self, work: int, series: Series) -> int:
        """Admit a request of `work` tokens, or raise 429; the requests now in flight."""
        self.load = admit(self.load, work, self.limits)
        self._gauge(series).inc()
        return self.load.requests

    def leave(self, work: int, series: Series) -> None:
        """An admitted request of `work` tokens has finished."""
        self.load = release(self.load, work)
        self._gauge(series).dec()

    def _gauge(self, series: Series) -> Cell:
        gauge = self._gauges.get(series)
        if gauge is None:
            gauge = self._gauges[series] = self.metrics.adapter_in_flight.labels(*series.values())
        return gauge
