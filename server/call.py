"""One request on its way through the gateway: what is forwarded where, and what it did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import GatewayError
from server.metrics import Series
from server.protocol import Endpoint
from server.resolver import Target

UNKNOWN = Series.unknown()
"""The series of a request whose model was never resolved (one object: it is frozen)."""


@dataclass
class Outcome:
    """What one request did, for the metrics."""

    series: Series = UNKNOWN
    status: int = 200
    error: GatewayError | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    concurrency: int = 1
    degenerate: bool = False
    """An answer came back degenerate (server.containment.answer_problem)."""
    work: int = 0
    """Tokens of work admitted for it (see server.admission.estimate)."""


@dataclass(slots=True)
class Call:
    """A request once it is resolved and admitted: the body sent on, where to, when it
    started, and the outcome that its answer fills in."""

    endpoint: Endpoint
    forward: dict[str, Any]
    target: Target
    outcome: Outcome
    started: float


Answers = dict[int, tuple[str, str | None]]
"""Each choice's text and finish reason, by choice index."""
