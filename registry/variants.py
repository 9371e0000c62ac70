"""Quantized variants of a base model, and how each adapter fares on each one.

A variant is a base model (a row of ``bases``, servable like any base) with a parent,
its quantization lineage (method, scheme, recipe digest, calibration dataset digest,
library versions) and the fidelity measured against the parent, plus whether it passed
its gate (``forced`` when it was registered anyway). For every adapter version evaluated
on a variant the registry keeps whether the pair passed its gate, which gates it failed,
and the figures. The gateway refuses a failed pair.

Registering a variant is one write: blobs are stored (fsynced) first, then the base row,
its variant row, every pair result and the events go in one transaction, so a crash at
any point leaves either the whole variant or nothing but unreferenced blobs (which
``registry gc`` collects).

These are the write use cases, over :class:`Deps` like :mod:`registry.rollouts`; the
reads and every query are the store's (:mod:`registry.sql_store.variants`), and
:class:`registry.Registry` is how callers reach both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from registry.catalog import scan_base
from registry.deps import Deps
from registry.errors import RefNotFoundError
from registry.names import check_new_name
from registry.records import BaseModel, PairInput
from registry.sql_store import now_iso
from registry.staging import store_files


def check_name_free(deps: Deps, name: str) -> None:
    """Refuse early (before any work) a variant name that is taken or not a valid name."""
    check_new_name(deps.store, name, None)


def add(
    deps: Deps,
    path: Path,
    *,
    name: str,
    parent: BaseModel,
    quantization: dict[str, Any],
    fidelity: dict[str, Any],
    passed: bool,
    forced: bool,
    pairs: Sequence[PairInput],
    who: str | None = None,
    progress: bool | None = False,
) -> BaseModel:
    """Record ``path`` as variant ``name`` of base ``parent``, with its pair results."""
    check_name_free(deps, name)
    scanned = scan_base(path, deps.settings.max_file_bytes, what="variant", norms=False)
    entries = store_files(
        deps.blobs,
        scanned.files,
        f"variant {name}",
        progress=progress,
        progress_min_bytes=deps.settings.progress_min_bytes,
    )
    deps.reached("variant.blobs")
    by, at = deps.who(who), now_iso()
    with deps.store.write() as tx:
        tx.claim_name(name, "base", at)
        digest = tx.insert_manifest(entries)
        tx.insert_base(
            name=name,
            digest=digest,
            architecture=scanned.architecture,
            template=scanned.template,
            license=parent.license,
            who=by,
            at=at,
        )
        tx.insert_variant(
            name=name,
            digest=digest,
            parent=parent.name,
            parent_digest=parent.digest,
            quantization=quantization,
            fidelity=fidelity,
            passed=passed,
            forced=forced,
            who=by,
            at=at,
        )
        deps.reached("variant.row")
        tx.upsert_pairs(variant=name, pairs=pairs, who=by, at=at)
    record = deps.store.base(name)
    assert record is not None
    return record


def record_pairs(
    deps: Deps, variant: str, pairs: Sequence[PairInput], *, who: str | None = None
) -> None:
    """Record (or replace) adapter x ``variant`` results, e.g. from ``quantize eval``."""
    if deps.store.variant(variant) is None:
        raise RefNotFoundError(f"{variant} is not a variant (no parent recorded)")
    by, at = deps.who(who), now_iso()
    with deps.store.write() as tx:
        tx.upsert_pairs(variant=variant, pairs=pairs, who=by, at=at)


def log_refused(deps: Deps, name: str, detail: dict[str, Any], *, who: str | None = None) -> None:
    """Append ``variant.refused`` to the event log: made, missed its gate, not recorded."""
    with deps.store.write() as tx:
        tx.event(
            at=now_iso(), who=deps.who(who), action="variant.refused", name=name, detail=detail
        )
