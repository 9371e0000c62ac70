"""Quarantine: an adapter version that corrupted an engine or answers degenerately is
refused by every gateway until a person lifts it.

A gateway that finds such a version (server/containment.py) records it here with its
reason; `registry quarantine rm REF` lifts it. Quarantining is idempotent: several
gateways that catch the same version at once leave the first reason standing. The
version itself never changes (versions are immutable); the quarantine is state beside
it, like an alias, and both moves are in the event log.
"""

from __future__ import annotations

import unicodedata

from registry.deps import Deps
from registry.errors import (
    InvalidRefError,
    NotQuarantinedError,
    QuarantinedError,
)
from registry.records import AdapterVersion
from registry.sql_store import now_iso
from registry.targets import live_version

#: A reason is one line a person reads in `registry show` and in a gateway's error.
MAX_REASON_CHARS = 500


def _reason(reason: str) -> str:
    """One plain line: control and format characters (terminal escapes, bidi overrides,
    zero-width) become spaces, runs of space one."""
    plain = "".join(" " if unicodedata.category(c).startswith("C") else c for c in reason)
    text = " ".join(plain.split())
    if not text:
        raise InvalidRefError("a quarantine needs a reason (what the adapter did)")
    return text[:MAX_REASON_CHARS]


def refuse_quarantined(record: AdapterVersion, *, as_: str) -> None:
    """Refuse making quarantined ``record`` the ``production`` version or a rollout's
    canary (``as_`` says which): gateways refuse it, so that move would serve nobody."""
    q = record.quarantine
    if q is None:
        return
    raise QuarantinedError(
        f"{record.ref} is quarantined ({q.reason}; {q.at} by {q.who}), so it cannot become "
        f"{as_}. If it is fine, lift the quarantine first: `registry quarantine rm {record.ref}`"
    )


def quarantine(
    deps: Deps, name: str, version: int, *, reason: str, who: str | None
) -> AdapterVersion:
    """Quarantine ``name@version``; a version already quarantined keeps its first reason."""
    text = _reason(reason)
    with deps.store.write() as tx:
        record = live_version(deps.store, name, version)
        if record.quarantine is None:
            tx.set_quarantine(
                name=name, version=version, reason=text, who=deps.who(who), at=now_iso()
            )
    return live_version(deps.store, name, version)


def lift(deps: Deps, name: str, version: int, *, who: str | None) -> AdapterVersion:
    """Lift the quarantine of ``name@version`` (a person's decision)."""
    with deps.store.write() as tx:
        record = live_version(deps.store, name, version)
        if record.quarantine is None:
            raise NotQuarantinedError(f"{name}@{version} is not quarantined")
        tx.clear_quarantine(
            name=name,
            version=version,
            reason=record.quarantine.reason,
            who=deps.who(who),
            at=now_iso(),
        )
    return live_version(deps.store, name, version)
