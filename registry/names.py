"""The one namespace: which names a new record may take.

Base models, datasets and adapters share one namespace, and a name keeps its kind for
good (a removed record's name stays taken, so an old ref never points at something new).
:func:`name_refusal` is the decision; :func:`check_new_name` applies it before any work
(push, base add, dataset add, a variant), and the store's ``claim_name`` applies it again
inside the write transaction, with the same message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.errors import NameConflictError
from registry.records import Kind, a_kind
from registry.refs import check_name

if TYPE_CHECKING:
    from registry.sql_store import SqlStore


def name_refusal(name: str, existing: Kind | None, wanted: Kind | None) -> NameConflictError | None:
    """Why a new record of kind ``wanted`` may not take ``name``, which names ``existing``
    now (None: it may). ``wanted`` None asks for a name no record has ever had (a
    variant: a new base that must not add to another); a record of the same kind may
    otherwise take its own name again (a new adapter version, an identical base)."""
    if existing is None or (wanted is not None and existing == wanted):
        return None
    return NameConflictError(
        f"{name!r} is taken: it already names {a_kind(existing)}; base models, datasets and "
        "adapters share one namespace and a name stays taken after `registry rm`, so pick "
        "another name (--name NAME)"
    )


def check_new_name(store: SqlStore, name: str, kind: Kind | None) -> None:
    """Refuse, before any work, what :func:`name_refusal` refuses, an invalid name, or a
    read-only registry."""
    check_name(name)
    store.check_writable()
    refused = name_refusal(name, store.kind_of(name), kind)
    if refused is not None:
        raise refused
