"""Quantized variants of a base model, and how each adapter fares on each one.

A variant is a base model (a row of ``bases``, servable like any base) with a parent,
its quantization lineage (method, scheme, recipe digest, calibration dataset digest,
library versions) and the fidelity measured against the parent, plus whether it passed
its gate (``forced`` when it was registered anyway). ``pair_evals`` holds, for every
adapter version evaluated on a variant, whether the pair passed its gate, which gates
it failed, and the figures. The gateway refuses a failed pair.

Registering a variant is one write: blobs are stored (fsynced) first, then the base row,
its variant row, every pair result and the events go in one transaction, so a crash at
any point leaves either the whole variant or nothing but unreferenced blobs (which
``registry verify --gc`` collects).

This module keeps its own SQL (the tables are migration 4's) so the quantization stage
lands without reshaping :mod:`registry.sqlite_store`; it works on the embedded registry
only, until the registry service grows these verbs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.architecture import chat_template, is_canonical_base_file, summarize
from registry.architecture import template_digest as _template_digest
from registry.deps import Deps
from registry.dirscan import ScanError, scan_directory
from registry.errors import (
    InvalidBaseModelError,
    NameConflictError,
    RefNotFoundError,
    UnsupportedLocationError,
)
from registry.protocol import Registry
from registry.records import AdapterVersion, BaseModel
from registry.refs import check_name
from registry.sqlite_store import SqliteStore, now_iso
from registry.staging import check_kind, store_files


@dataclass(frozen=True, slots=True)
class VariantInfo:
    """What makes a base model a variant: parent, quantization lineage, fidelity."""

    name: str
    digest: str
    parent: str
    parent_digest: str
    quantization: dict[str, Any]
    fidelity: dict[str, Any]
    passed: bool
    forced: bool


@dataclass(frozen=True, slots=True)
class PairResult:
    """One adapter version evaluated on one variant."""

    adapter: str
    adapter_digest: str
    variant: str
    variant_digest: str
    passed: bool
    failed_gates: tuple[str, ...]
    figures: dict[str, Any]
    evaluated_at: str


@dataclass(frozen=True, slots=True)
class PairInput:
    """A pair result to record: the adapter as ``NAME@N``."""

    adapter: str
    passed: bool
    failed_gates: tuple[str, ...]
    figures: dict[str, Any]


def _deps(reg: Registry) -> Deps:
    deps = getattr(reg, "deps", None)
    if not isinstance(deps, Deps):
        raise UnsupportedLocationError(
            f"variants are recorded in an embedded registry (a directory) only; "
            f"{reg.location} is not one"
        )
    return deps


def _adapter_id(store: SqliteStore, ref: str) -> int:
    name, _, version = ref.partition("@")
    row = store.one("SELECT id FROM adapters WHERE name = ? AND version = ?", (name, int(version)))
    if row is None:
        raise RefNotFoundError(f"no adapter version {ref}")
    return int(row["id"])


def check_new_name(reg: Registry, name: str) -> None:
    """Refuse early (before any work) a variant name that is taken or not a valid name."""
    deps = _deps(reg)
    check_name(name)
    deps.store.check_writable()
    if deps.store.kind_of(name) is not None:
        raise NameConflictError(
            f"{name!r} is taken (a {deps.store.kind_of(name)}); pass --name NAME, or remove "
            f"it first (`registry rm {name}`)"
        )


def add_variant(
    reg: Registry,
    path: Path | str,
    *,
    name: str,
    parent: str,
    quantization: dict[str, Any],
    fidelity: dict[str, Any],
    passed: bool,
    forced: bool,
    pairs: list[PairInput],
    who: str | None = None,
    progress: bool | None = False,
) -> BaseModel:
    """Record ``path`` as variant ``name`` of base ``parent``, with its pair results."""
    deps = _deps(reg)
    check_new_name(reg, name)
    check_kind(deps.store, name, "base")
    parent_record = reg.base(parent)
    try:
        files = [
            f
            for f in scan_directory(Path(path), deps.settings.max_file_bytes)
            if is_canonical_base_file(f.relpath)
        ]
        architecture = summarize(files)
        template = _template_digest(chat_template({f.relpath: f.path for f in files}))
    except (ScanError, ValueError, OSError, RecursionError) as exc:
        raise InvalidBaseModelError(f"cannot record variant from {path}: {exc}") from None
    entries = store_files(
        deps.blobs,
        files,
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
            architecture=architecture,
            template=template,
            license=parent_record.license,
            who=by,
            at=at,
        )
        conn = tx.conn
        base_id = conn.execute("SELECT id FROM bases WHERE name = ?", (name,)).fetchone()[0]
        parent_id = conn.execute("SELECT id FROM bases WHERE name = ?", (parent,)).fetchone()[0]
        conn.execute(
            "UPDATE bases SET parent_id = ?, quantization = ? WHERE id = ?",
            (parent_id, str(quantization.get("method")), base_id),
        )
        conn.execute(
            "INSERT INTO variants (base_id, quantization, fidelity, passed, forced)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                base_id,
                json.dumps(quantization, sort_keys=True),
                json.dumps(fidelity, sort_keys=True),
                int(passed),
                int(forced),
            ),
        )
        deps.reached("variant.row")
        detail = {
            "parent": parent,
            "parent_digest": parent_record.digest,
            "digest": digest,
            "method": quantization.get("method"),
            "passed": passed,
            "forced": forced,
            "failed_gates": fidelity.get("failed_gates", []),
        }
        tx.event(at=at, who=by, action="variant.add", name=name, detail=detail)
        _insert_pairs(tx.conn, deps.store, base_id, name, pairs, by, at)
    record = deps.store.base(name)
    assert record is not None
    return record


def _insert_pairs(
    conn: Any,
    store: SqliteStore,
    base_id: int,
    variant: str,
    pairs: list[PairInput],
    who: str,
    at: str,
) -> None:
    for pair in pairs:
        conn.execute(
            "INSERT INTO pair_evals (adapter_id, base_id, passed, failed_gates, figures,"
            " evaluated_by, evaluated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (adapter_id, base_id) DO UPDATE SET passed = excluded.passed,"
            " failed_gates = excluded.failed_gates, figures = excluded.figures,"
            " evaluated_by = excluded.evaluated_by, evaluated_at = excluded.evaluated_at",
            (
                _adapter_id(store, pair.adapter),
                base_id,
                int(pair.passed),
                json.dumps(list(pair.failed_gates)),
                json.dumps(pair.figures, sort_keys=True),
                who,
                at,
            ),
        )
        name, _, version = pair.adapter.partition("@")
        detail = {"variant": variant, "passed": pair.passed, "failed_gates": pair.failed_gates}
        conn.execute(
            "INSERT INTO events (at, who, action, name, version, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (at, who, "pair.eval", name, int(version), json.dumps(detail, sort_keys=True)),
        )


def record_pairs(
    reg: Registry, variant: str, pairs: list[PairInput], *, who: str | None = None
) -> None:
    """Record (or replace) adapter x ``variant`` results, e.g. from ``quantize eval``."""
    deps = _deps(reg)
    info = variant_info(reg, variant)
    if info is None:
        raise RefNotFoundError(f"{variant} is not a variant (no parent recorded)")
    by, at = deps.who(who), now_iso()
    with deps.store.write() as tx:
        row = tx.conn.execute("SELECT id FROM bases WHERE name = ?", (variant,)).fetchone()
        _insert_pairs(tx.conn, deps.store, int(row[0]), variant, pairs, by, at)


def log_refused(
    reg: Registry, name: str, detail: dict[str, Any], *, who: str | None = None
) -> None:
    """Append ``variant.refused`` to the event log: made, missed its gate, not recorded."""
    deps = _deps(reg)
    with deps.store.write() as tx:
        tx.event(
            at=now_iso(), who=deps.who(who), action="variant.refused", name=name, detail=detail
        )


_VARIANT_SELECT = """
SELECT b.name, b.digest, p.name AS parent, p.digest AS parent_digest,
       v.quantization, v.fidelity, v.passed, v.forced
FROM variants v JOIN bases b ON b.id = v.base_id JOIN bases p ON p.id = b.parent_id
WHERE b.removed_at IS NULL
"""


def _variant(row: dict[str, Any]) -> VariantInfo:
    return VariantInfo(
        name=row["name"],
        digest=row["digest"],
        parent=row["parent"],
        parent_digest=row["parent_digest"],
        quantization=json.loads(row["quantization"]),
        fidelity=json.loads(row["fidelity"]),
        passed=bool(row["passed"]),
        forced=bool(row["forced"]),
    )


def variant_info(reg: Registry, name: str) -> VariantInfo | None:
    """The variant record of base ``name``, or None when it is not a variant."""
    row = _deps(reg).store.one(_VARIANT_SELECT + " AND b.name = ?", (name,))
    return _variant(row) if row else None


def variants_of(reg: Registry, parent: str) -> list[VariantInfo]:
    """The live variants whose parent is base ``parent``, by name."""
    rows = _deps(reg).store.all(_VARIANT_SELECT + " AND p.name = ? ORDER BY b.name", (parent,))
    return [_variant(r) for r in rows]


_PAIR_SELECT = """
SELECT a.name || '@' || a.version AS adapter, a.digest AS adapter_digest,
       b.name AS variant, b.digest AS variant_digest, e.passed, e.failed_gates, e.figures,
       e.evaluated_at
FROM pair_evals e JOIN adapters a ON a.id = e.adapter_id JOIN bases b ON b.id = e.base_id
WHERE b.removed_at IS NULL
"""


def _pair(row: dict[str, Any]) -> PairResult:
    return PairResult(
        adapter=row["adapter"],
        adapter_digest=row["adapter_digest"],
        variant=row["variant"],
        variant_digest=row["variant_digest"],
        passed=bool(row["passed"]),
        failed_gates=tuple(json.loads(row["failed_gates"])),
        figures=json.loads(row["figures"]),
        evaluated_at=row["evaluated_at"],
    )


def pair_results(reg: Registry, adapter: AdapterVersion) -> list[PairResult]:
    """Every variant ``adapter`` was evaluated on, and how it fared."""
    rows = _deps(reg).store.all(
        _PAIR_SELECT + " AND a.name = ? AND a.version = ? ORDER BY b.name",
        (adapter.name, adapter.version),
    )
    return [_pair(r) for r in rows]


def pair_result(reg: Registry, adapter: AdapterVersion, variant: str) -> PairResult | None:
    """How ``adapter`` fared on ``variant`` (None: never evaluated there)."""
    row = _deps(reg).store.one(
        _PAIR_SELECT + " AND a.name = ? AND a.version = ? AND b.name = ?",
        (adapter.name, adapter.version, variant),
    )
    return _pair(row) if row else None


def pairs_on(reg: Registry, variant: str) -> list[PairResult]:
    """Every adapter version evaluated on ``variant``, by adapter."""
    rows = _deps(reg).store.all(_PAIR_SELECT + " AND b.name = ? ORDER BY adapter", (variant,))
    return [_pair(r) for r in rows]


def show_extra(reg: Registry, record: AdapterVersion | BaseModel | Any) -> dict[str, Any]:
    """What ``registry show`` adds for variants: a variant's parent digest, quantization and
    fidelity; a base's variants; an adapter's results on variants. Empty when none apply
    (or the registry cannot hold variants)."""
    if getattr(reg, "deps", None) is None:
        return {}
    if isinstance(record, BaseModel):
        extra: dict[str, Any] = {}
        info = variant_info(reg, record.name)
        if info is not None:
            extra["parent_digest"] = info.parent_digest
            extra["quantization"] = info.quantization
            extra["fidelity"] = info.fidelity
            extra["gate"] = {"passed": info.passed, "forced": info.forced}
        children = variants_of(reg, record.name)
        if children:
            extra["variants"] = [
                {
                    "name": v.name,
                    "digest": v.digest,
                    "method": v.quantization.get("method"),
                    "passed": v.passed,
                    "forced": v.forced,
                }
                for v in children
            ]
        return extra
    if isinstance(record, AdapterVersion):
        results = pair_results(reg, record)
        if not results:
            return {}
        return {
            "variant_evals": [
                {
                    "variant": p.variant,
                    "variant_digest": p.variant_digest,
                    "passed": p.passed,
                    "failed_gates": list(p.failed_gates),
                    "figures": p.figures,
                    "evaluated_at": p.evaluated_at,
                }
                for p in results
            ]
        }
    return {}


def describe_extra(extra: dict[str, Any]) -> str:
    """Plain-text lines for :func:`show_extra`'s dict (empty string when it is empty)."""
    lines: list[str] = []
    if "quantization" in extra:
        q, fid = extra["quantization"], extra["fidelity"]
        base = fid.get("base", {})
        state = "passed" if extra["gate"]["passed"] else "FORCED past its gate"
        lines += [
            f"  parent digest: {extra['parent_digest']}",
            f"  quantization: {q.get('method')} {q.get('scheme')} recipe {q.get('recipe_digest')}",
            f"  fidelity:     size ratio {fid.get('size_ratio')}, perplexity ratio "
            f"{base.get('perplexity_ratio')}, token agreement {base.get('token_agreement')} "
            f"({state})",
        ]
    for v in extra.get("variants", []):
        flag = "" if v["passed"] else " (forced)"
        lines.append(f"  variant:      {v['name']} ({v['method']}){flag}")
    for p in extra.get("variant_evals", []):
        verdict = "passed" if p["passed"] else "FAILED " + ", ".join(p["failed_gates"])
        lines.append(f"  on variant:   {p['variant']}: {verdict}")
    return "".join("\n" + line for line in lines)
