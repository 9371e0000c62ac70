"""The narrow dependencies the write use cases run over: a store, a blob store, settings.

:mod:`registry.push`, :mod:`registry.catalog` and :mod:`registry.transfer` take a
:class:`Deps`, never a whole registry, so each can be reused (or faked) on its own.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass

from registry.blobs import BlobStore
from registry.settings import RegistrySettings
from registry.sql_store import SqlStore

#: Called with the name of each step a write reaches (tests use it to kill a push).
StepHook = Callable[[str], None]


def default_who(who: str | None, settings: RegistrySettings) -> str:
    """Who to record: ``who``, else ``REGISTRY_USER``, else the OS user."""
    if who:
        return who
    if settings.user:
        return settings.user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True, slots=True)
class Deps:
    """What a use case may touch."""

    store: SqlStore
    blobs: BlobStore
    settings: RegistrySettings
    on_step: StepHook | None = None

    def who(self, who: str | None) -> str:
        """Who to record: the argument, else ``REGISTRY_USER``, else the OS user."""
        return default_who(who, self.settings)

    def reached(self, step: str) -> None:
        """Tell the step hook (if any) that a write reached ``step``."""
        if self.on_step is not None:
            self.on_step(step)
