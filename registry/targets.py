"""The live-version rule: a write that targets ``NAME@N`` (an alias move, a rollout's
canary, a quarantine, a ref resolved to a version) needs version ``N`` to exist and not
be removed. :func:`dead_version` is the decision, one message for every caller;
:func:`live_version` applies it to the store's record.
"""

from __future__ import annotations

from registry.errors import RefNotFoundError
from registry.records import AdapterVersion
from registry.sql_store import SqlStore


def dead_version(name: str, version: int, live: bool | None) -> RefNotFoundError | None:
    """Why ``name@version`` cannot be targeted (None: it can). ``live`` is None when the
    version was never pushed, False when it was removed."""
    if live is None:
        return RefNotFoundError(f"{name} has no version {version}; see `registry ls`")
    if not live:
        return RefNotFoundError(
            f"{name}@{version} was removed; see `registry ls` for the live versions"
        )
    return None


def live_version(store: SqlStore, name: str, version: int) -> AdapterVersion:
    """The record of live ``name@version``; RefNotFoundError otherwise."""
    record = store.adapter(name, version)
    problem = dead_version(name, version, None if record is None else record.removed_at is None)
    if problem is not None:
        raise problem
    assert record is not None
    return record
