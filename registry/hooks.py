"""After-push hooks: work that other parts of loraport do when a new adapter version lands.

The registry records the push; what follows from it lives elsewhere and is found through
the ``loraport.after_push`` entry point group (``pyproject.toml``), so the registry never
imports its consumers. ``quantize`` registers one: it measures the new version on every
variant of its base (docs/quantize.md). A hook runs after the push has committed, so a
hook that fails loses nothing: ``registry push`` warns and names what to run instead,
and the registry still says the pair is unevaluated (the gateway refuses it until then).

Hooks run only where the registry's files are (:func:`runs_here`): a push to a
``registry serve`` over HTTP leaves the pairs for ``quantize eval --pending``, a job run
next to ``.venv-quantize``, and says how many (:mod:`registry.pending`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol

from registry.location import scheme
from registry.protocol import Registry
from registry.records import AdapterVersion

GROUP = "loraport.after_push"
Echo = Callable[[str], None]


class AfterPush(Protocol):
    """Called with the open registry, the version just pushed, and a progress printer.

    Raises an exception whose message says what to run by hand when it cannot finish."""

    def __call__(self, reg: Registry, adapter: AdapterVersion, echo: Echo) -> None: ...


@dataclass(frozen=True, slots=True)
class Hook:
    name: str
    run: AfterPush


def after_push_hooks() -> list[Hook]:
    """The installed hooks, by entry point name."""
    found = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    return [Hook(ep.name, ep.load()) for ep in found]


def runs_here(location: str) -> bool:
    """Whether ``registry push`` runs the after-push hooks for a registry at ``location``:
    on a directory or a database (PostgreSQL), yes; on a registry service, no (its pairs
    wait for ``quantize eval --pending``: a client measuring through the network would
    pull the parent, the variant and the adapter on every push, and the server cannot
    run ``.venv-quantize`` on a request's path)."""
    return scheme(location) != "http"
