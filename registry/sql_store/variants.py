"""Quantized variants and adapter x variant results (what :mod:`registry.variants` records).

A variant is a row of ``bases`` whose ``parent_id`` and ``quantization`` (its method) are
set, plus one ``variants`` row: its quantization lineage and fidelity (JSON), whether it
passed its gate and whether it was forced. ``pair_evals`` holds the latest result of
each adapter version on each variant; re-evaluation replaces it, and each evaluation is
also an event. Reads leave removed variants out. The tables are migration 4's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from registry.digest import Digest
from registry.errors import RefNotFoundError
from registry.records import PairInput, PairResult, VariantInfo
from registry.sql_store.core import Row, StoreCore, TxCore

_VARIANT_SELECT = """
SELECT b.name, b.digest, p.name AS parent, p.digest AS parent_digest,
       v.quantization, v.fidelity, v.passed, v.forced
FROM variants v JOIN bases b ON b.id = v.base_id JOIN bases p ON p.id = b.parent_id
WHERE b.removed_at IS NULL
"""
_PAIR_SELECT = """
SELECT a.name || '@' || a.version AS adapter, a.digest AS adapter_digest,
       b.name AS variant, b.digest AS variant_digest, e.passed, e.failed_gates, e.figures,
       e.evaluated_at
FROM pair_evals e JOIN adapters a ON a.id = e.adapter_id JOIN bases b ON b.id = e.base_id
WHERE b.removed_at IS NULL
"""


class VariantReads(StoreCore):
    def variant(self, name: str) -> VariantInfo | None:
        """The variant record of base ``name``, or None when it is not a variant."""
        row = self.one(_VARIANT_SELECT + " AND b.name = ?", (name,))
        return _variant(row) if row else None

    def variants_of(self, parent: str) -> list[VariantInfo]:
        """The live variants whose parent is base ``parent``, by name."""
        rows = self.all(_VARIANT_SELECT + " AND p.name = ? ORDER BY b.name", (parent,))
        return [_variant(r) for r in rows]

    def pair(self, name: str, version: int, variant: str) -> PairResult | None:
        """How adapter ``name@version`` fared on ``variant`` (None: never evaluated there)."""
        row = self.one(
            _PAIR_SELECT + " AND a.name = ? AND a.version = ? AND b.name = ?",
            (name, version, variant),
        )
        return _pair(row) if row else None

    def pairs_of(self, name: str, version: int) -> list[PairResult]:
        """Every variant adapter ``name@version`` was evaluated on, by variant."""
        rows = self.all(
            _PAIR_SELECT + " AND a.name = ? AND a.version = ? ORDER BY b.name", (name, version)
        )
        return [_pair(r) for r in rows]

    def pairs_on(self, variant: str) -> list[PairResult]:
        """Every adapter version evaluated on ``variant``, by adapter."""
        rows = self.all(_PAIR_SELECT + " AND b.name = ? ORDER BY adapter", (variant,))
        return [_pair(r) for r in rows]


class VariantWrites(TxCore):
    def insert_variant(
        self,
        *,
        name: str,
        digest: Digest,
        parent: str,
        parent_digest: Digest,
        quantization: dict[str, Any],
        fidelity: dict[str, Any],
        passed: bool,
        forced: bool,
        who: str,
        at: str,
    ) -> None:
        """Make base ``name`` (inserted in this transaction) a variant of ``parent``; log it."""
        base_id, parent_id = self._base_id(name), self._base_id(parent)
        self.conn.execute(
            "UPDATE bases SET parent_id = ?, quantization = ? WHERE id = ?",
            (parent_id, str(quantization.get("method")), base_id),
        )
        self.conn.execute(
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
        detail = {
            "parent": parent,
            "parent_digest": parent_digest,
            "digest": digest,
            "method": quantization.get("method"),
            "passed": passed,
            "forced": forced,
            "failed_gates": fidelity.get("failed_gates", []),
        }
        self.event(at=at, who=who, action="variant.add", name=name, detail=detail)

    def upsert_pairs(self, *, variant: str, pairs: Sequence[PairInput], who: str, at: str) -> None:
        """Record (or replace) each adapter's result on ``variant``, and log each."""
        base_id = self._base_id(variant)
        for pair in pairs:
            name, _, version = pair.adapter.partition("@")
            row = self.conn.execute(
                "SELECT id FROM adapters WHERE name = ? AND version = ?", (name, int(version))
            ).fetchone()
            if row is None:
                raise RefNotFoundError(f"no adapter version {pair.adapter}")
            self.conn.execute(
                "INSERT INTO pair_evals (adapter_id, base_id, passed, failed_gates, figures,"
                " evaluated_by, evaluated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (adapter_id, base_id) DO UPDATE SET passed = excluded.passed,"
                " failed_gates = excluded.failed_gates, figures = excluded.figures,"
                " evaluated_by = excluded.evaluated_by, evaluated_at = excluded.evaluated_at",
                (
                    int(row[0]),
                    base_id,
                    int(pair.passed),
                    json.dumps(list(pair.failed_gates)),
                    json.dumps(pair.figures, sort_keys=True),
                    who,
                    at,
                ),
            )
            detail = {"variant": variant, "passed": pair.passed, "failed_gates": pair.failed_gates}
            self.event(
                at=at, who=who, action="pair.eval", name=name, version=int(version), detail=detail
            )

    def _base_id(self, name: str) -> int:
        return int(self.conn.execute("SELECT id FROM bases WHERE name = ?", (name,)).fetchone()[0])


def _variant(row: Row) -> VariantInfo:
    return VariantInfo(
        name=row["name"],
        digest=Digest(row["digest"]),
        parent=row["parent"],
        parent_digest=Digest(row["parent_digest"]),
        quantization=json.loads(row["quantization"]),
        fidelity=json.loads(row["fidelity"]),
        passed=bool(row["passed"]),
        forced=bool(row["forced"]),
    )


def _pair(row: Row) -> PairResult:
    return PairResult(
        adapter=row["adapter"],
        adapter_digest=Digest(row["adapter_digest"]),
        variant=row["variant"],
        variant_digest=Digest(row["variant_digest"]),
        passed=bool(row["passed"]),
        failed_gates=tuple(json.loads(row["failed_gates"])),
        figures=json.loads(row["figures"]),
        evaluated_at=row["evaluated_at"],
    )
