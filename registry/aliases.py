"""Alias moves: ``registry alias set`` / ``alias rm``, and the rules for ``production``.

An alias is a mutable pointer to one live version. ``production`` is the one plain
``NAME`` serves, so a move of it (by hand, or by ``registry push --alias production``)
passes :func:`check_production_move` inside its write transaction: refused while a
rollout of the name is active (:func:`registry.rollouts.refuse_hand_move`; the rollout's
own promotion moves it), and refused onto a version trained on another base model than
the version production points at now (:func:`registry.bases.check_same_base`, the rule
``deploy canary`` applies to a canary). Other aliases move freely.
"""

from __future__ import annotations

from registry.bases import check_same_base
from registry.deps import Deps
from registry.errors import RefNotFoundError
from registry.refs import PRODUCTION, check_alias, check_name, check_version
from registry.rollouts import refuse_hand_move
from registry.sqlite_store import SqliteStore, now_iso


def check_production_move(store: SqliteStore, name: str, version: int | None) -> None:
    """Refuse moving ``name@production`` to ``version`` (None: removing it). Call inside
    the write transaction that moves it; a no-op move passes."""
    current = store.alias_target(name, PRODUCTION)
    if current == version:
        return
    refuse_hand_move(store, name)
    if version is None or current is None:
        return
    production, new = store.adapter(name, current), store.adapter(name, version)
    assert production is not None and new is not None, (name, current, version)
    check_same_base(production, new, as_="production")


def set_alias(deps: Deps, name: str, alias: str, version: int, *, who: str | None) -> None:
    """Point ``name@alias`` at live ``version``."""
    check_alias(alias)
    check_version(version)
    store = deps.store
    if store.kind_of(name) != "adapter":
        raise RefNotFoundError(f"no adapter named {name!r}; see `registry ls`")
    with store.write() as tx:
        found = store.version_digest(name, version)
        if found is None or not found[1]:
            state = "has no version" if found is None else "has removed version"
            raise RefNotFoundError(f"{name} {state} {version}; see `registry ls`")
        if alias == PRODUCTION:
            check_production_move(store, name, version)
        tx.move_alias(name=name, alias=alias, version=version, who=deps.who(who), at=now_iso())


def remove_alias(deps: Deps, name: str, alias: str, *, who: str | None) -> None:
    """Delete ``name@alias``."""
    check_name(name)
    check_alias(alias)
    store = deps.store
    with store.write() as tx:
        old = store.alias_target(name, alias)
        if old is None:
            raise RefNotFoundError(f"{name} has no alias {alias!r}")
        if alias == PRODUCTION:
            check_production_move(store, name, None)
        tx.delete_alias(name=name, alias=alias, old=old, who=deps.who(who), at=now_iso())
