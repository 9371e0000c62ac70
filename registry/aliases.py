"""Alias moves: ``registry alias set`` / ``alias rm``, and the rules for ``production``.

An alias is a mutable pointer to one live version. ``production`` is the one plain
``NAME`` serves, so a move of it (by hand, or by ``registry push --alias production``)
passes :func:`check_production_move` inside its write transaction: refused while a
rollout of the name is active (:func:`registry.rollouts.refuse_hand_move`; the rollout's
own promotion moves it), refused onto a quarantined version
(:func:`registry.quarantine.refuse_quarantined`, which ``deploy canary`` applies to a
canary too), and refused onto a version trained on another base model than the version
production points at now (:func:`registry.bases.check_same_base`, the rule ``deploy
canary`` applies to a canary). Other aliases move freely.
"""

from __future__ import annotations

from collections.abc import Iterable

from registry.bases import check_same_base
from registry.deps import Deps
from registry.errors import InvalidRefError, RefNotFoundError
from registry.quarantine import refuse_quarantined
from registry.refs import PRODUCTION, check_alias, check_name, check_version
from registry.rollouts import refuse_hand_move
from registry.sql_store import SqlStore, now_iso
from registry.targets import live_version


def check_production_move(store: SqlStore, name: str, version: int | None) -> None:
    """Refuse moving ``name@production`` to ``version`` (None: removing it). Call inside
    the write transaction that moves it; a no-op move passes."""
    current = store.alias_target(name, PRODUCTION)
    if current == version:
        return
    refuse_hand_move(store, name)
    if version is None:
        return
    new = store.adapter(name, version)
    assert new is not None, (name, version)
    refuse_quarantined(new, as_="production")
    if current is None:
        return
    production = store.adapter(name, current)
    assert production is not None, (name, current)
    check_same_base(production, new, as_="production")


def check_case(alias: str, existing: Iterable[str]) -> None:
    """Refuse a new alias that differs only in case from ``production`` or from one the
    name already has: aliases are case-sensitive, so ``Production`` would be another
    pointer, past the production rules, while plain NAME keeps serving ``production``."""
    for known in (PRODUCTION, *existing):
        if alias != known and alias.lower() == known.lower():
            raise InvalidRefError(
                f"alias {alias!r} differs from {known!r} only in case; aliases are "
                f"case-sensitive: write {known}"
            )


def set_alias(deps: Deps, name: str, alias: str, version: int, *, who: str | None) -> None:
    """Point ``name@alias`` at live ``version``."""
    check_alias(alias)
    check_version(version)
    store = deps.store
    if store.kind_of(name) != "adapter":
        raise RefNotFoundError(f"no adapter named {name!r}; see `registry ls`")
    with store.write() as tx:
        live_version(store, name, version)
        check_case(alias, store.aliases_of(name))
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
