"""Which adapter x variant pairs still wait for a fidelity measurement.

The gateway serves an adapter on a quantized variant only once the pair has a recorded
result (docs/quantize.md). A push to a directory measures the new version on each variant
at once (the ``loraport.after_push`` hook); a push over HTTP cannot (the measurement needs
``.venv-quantize`` and minutes of compute, not the server's request path), so its pairs
wait for ``quantize eval --pending``. The rule for "waits" lives here, once:
:func:`pending_pairs` decides, :func:`pending_in` and :func:`pending_for` read what it
decides on from a :class:`Registry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from registry.protocol import Registry
from registry.records import AdapterVersion, PairResult, VariantInfo


@dataclass(frozen=True, slots=True)
class PendingPair:
    """One adapter version (``NAME@N``) not yet measured on one variant."""

    adapter: str
    variant: str


def pending_pairs(
    adapters: Iterable[AdapterVersion],
    variants: Iterable[VariantInfo],
    measured: Iterable[PairResult],
) -> list[PendingPair]:
    """The pairs of ``adapters`` x ``variants`` that have no result in ``measured``.

    A pair exists only where the adapter was trained on the variant's parent (same
    digest) and the variant takes adapters (a merged deployment holds its one adapter
    already). A result counts only for the variant with the digest it was measured on:
    one recorded on an earlier variant of the same name measured other weights. A
    result counts whether it passed or failed (a failed pair is measured; `quantize eval
    VARIANT REF` re-measures it). Quarantined versions are left out: every gateway
    refuses them anyway, and a version that corrupts an engine would fail the whole
    batch it is measured in. Ordered by variant, then adapter name and version.
    """
    done = {(p.adapter, p.variant, p.variant_digest) for p in measured}
    takers = sorted((v for v in variants if not v.merged), key=lambda v: v.name)
    live = sorted(
        (a for a in adapters if a.quarantine is None and a.removed_at is None),
        key=lambda a: (a.name, a.version),
    )
    return [
        PendingPair(a.ref, v.name)
        for v in takers
        for a in live
        if a.base_model.digest == v.parent_digest and (a.ref, v.name, v.digest) not in done
    ]


def all_variants(reg: Registry) -> list[VariantInfo]:
    """Every live variant in ``reg``, by name."""
    parents = sorted({b.parent for b in reg.list_bases() if b.parent is not None})
    return sorted((v for p in parents for v in reg.variants_of(p)), key=lambda v: v.name)


def pending_in(reg: Registry, variants: Sequence[VariantInfo] | None = None) -> list[PendingPair]:
    """Every pair in ``reg`` (or on ``variants`` only) that waits for a measurement."""
    chosen = all_variants(reg) if variants is None else list(variants)
    measured = [p for v in chosen for p in reg.pairs_on(v.name)]
    return pending_pairs(reg.list_adapters(), chosen, measured)


def pending_for(reg: Registry, adapter: AdapterVersion) -> list[PendingPair]:
    """The variants of ``adapter``'s base on which it waits for a measurement."""
    parent = reg.base(str(adapter.base_model.digest)).name
    return pending_pairs([adapter], reg.variants_of(parent), reg.pairs_of(adapter))
