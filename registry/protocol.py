"""The :class:`Registry` protocol: what every caller (CLIs, gateway, quantize, deploy) uses.

``registry.open(location)`` picks the implementation from the location's scheme and
returns this type: a directory gives :class:`registry.local.LocalRegistry` (SQLite +
blobs); ``http(s)://`` will give the registry service's client. Callers type against
this protocol only, never against an implementation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from registry.prepare import PushRequest
from registry.records import (
    AdapterVersion,
    BaseModel,
    Dataset,
    Event,
    GcReport,
    Kind,
    PairInput,
    PairResult,
    PushResult,
    Resolved,
    Rollout,
    VariantInfo,
    VerifyReport,
)

PathLike = str | os.PathLike[str]


class Registry(Protocol):
    """One registry, open. A context manager; :meth:`close` when done."""

    @property
    def location(self) -> str:
        """Where this registry lives (a directory path or a URL), for messages."""
        ...

    @property
    def read_only(self) -> bool:
        """True when writes are refused (e.g. a read-only mount)."""
        ...

    def __enter__(self) -> Registry: ...

    def __exit__(self, *exc: object) -> None: ...

    def close(self) -> None: ...

    # -- reads ------------------------------------------------------------------------
    def resolve(self, ref: str) -> Resolved:
        """What ``ref`` points at now; RefNotFound/InvalidRef/AmbiguousRef otherwise."""
        ...

    def adapter(self, ref: str) -> AdapterVersion: ...

    def base(self, ref: str) -> BaseModel: ...

    def dataset(self, ref: str) -> Dataset: ...

    def list_adapters(self, name: str | None = None) -> list[AdapterVersion]: ...

    def list_bases(self) -> list[BaseModel]: ...

    def list_datasets(self) -> list[Dataset]: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def events(self, name: str | None = None) -> list[Event]: ...

    def clock(self) -> float:
        """The registry's time now, in epoch seconds: the clock its timestamps (``at``,
        ``step_started_at``) and lease expiries are written with. A caller that compares
        those with "now" asks this, never its own clock (a remote caller's may be skewed)."""
        ...

    def change_token(self) -> int:
        """Grows whenever a write is committed; cheap to poll."""
        ...

    def wait_for_change(self, since: int, *, timeout_s: float) -> int:
        """The change token once it differs from ``since``, or ``since`` after
        ``timeout_s`` (a long poll: a gateway learns of a write without asking per request)."""
        ...

    def pull(self, ref: str, dest: PathLike, *, progress: bool | None = False) -> Path: ...

    def verify(
        self, ref: str | None = None, *, gc: bool = False, gc_grace_s: float = 3600.0
    ) -> VerifyReport: ...

    def gc(self, *, grace_s: float = 3600.0) -> GcReport:
        """Remove blobs no record references and temp files of killed writes, once older
        than ``grace_s`` (never a referenced blob, never one younger: a write in flight)."""
        ...

    # -- writes -----------------------------------------------------------------------
    def push_adapter(
        self,
        path: PathLike,
        *,
        name: str | None = None,
        base: str | None = None,
        dataset: str | PathLike | None = None,
        allow_unknown_dataset: bool = False,
        alias: str | None = None,
        schema: dict[str, Any] | PathLike | None = None,
        meta: dict[str, Any] | None = None,
        code: PathLike | None = None,
        git_sha: str | None = None,
        who: str | None = None,
        progress: bool | None = False,
    ) -> PushResult: ...

    def push_request(
        self,
        request: PushRequest,
        source: Path,
        dataset_file: Path | None,
        *,
        who: str | None = None,
        progress: bool | None = False,
    ) -> PushResult:
        """The registry's half of :meth:`push_adapter` (:mod:`registry.prepare`): the
        request is values; ``source`` and ``dataset_file`` are only where the bytes are
        read from on this machine. The registry re-validates every byte it receives."""
        ...

    def add_base(
        self,
        path: PathLike,
        *,
        name: str,
        license: str | None = None,
        who: str | None = None,
        progress: bool | None = False,
    ) -> BaseModel: ...

    def add_dataset(
        self, path: PathLike, *, name: str, license: str | None = None, who: str | None = None
    ) -> Dataset: ...

    def set_alias(self, name: str, alias: str, version: int, *, who: str | None = None) -> None: ...

    def remove_alias(self, name: str, alias: str, *, who: str | None = None) -> None: ...

    def remove(self, ref: str, *, who: str | None = None) -> Resolved: ...

    # -- quarantine (rules in registry.quarantine) --------------------------------------
    def quarantine(self, ref: str, *, reason: str, who: str | None = None) -> AdapterVersion:
        """Refuse the adapter version ``ref`` names in every gateway until lifted; a version
        already quarantined keeps its first reason."""
        ...

    def lift_quarantine(self, ref: str, *, who: str | None = None) -> AdapterVersion:
        """Lift the quarantine of ``ref`` (NotQuarantinedError if it has none)."""
        ...

    def quarantined(self) -> list[AdapterVersion]:
        """Live adapter versions under quarantine."""
        ...

    # -- rollouts (rules in registry.rollouts) -----------------------------------------
    def start_rollout(
        self,
        name: str,
        canary: int,
        *,
        steps: Sequence[float],
        plan: dict[str, Any] | None = None,
        who: str | None = None,
    ) -> Rollout:
        """Split ``name`` between production and ``canary``; one active rollout per name."""
        ...

    def rollout(self, name: str) -> Rollout | None:
        """The active rollout of ``name`` (what gateways split by), or None."""
        ...

    def rollouts(self, name: str) -> list[Rollout]: ...

    def claim_rollout(
        self, name: str, rollout_id: int, holder: str, *, ttl_s: float, who: str | None = None
    ) -> Rollout: ...

    def release_rollout(self, name: str, rollout_id: int, holder: str) -> None: ...

    def advance_rollout(
        self,
        name: str,
        rollout_id: int,
        step: int,
        *,
        holder: str | None = None,
        reason: str = "",
        who: str | None = None,
    ) -> Rollout: ...

    def record_analysis(
        self,
        name: str,
        rollout_id: int,
        *,
        step: int,
        verdict: str,
        reason: str,
        figures: dict[str, Any],
        holder: str | None = None,
        who: str | None = None,
    ) -> None: ...

    def end_rollout(
        self,
        name: str,
        rollout_id: int | None,
        outcome: Literal["promoted", "rolled_back", "aborted"],
        *,
        reason: str,
        holder: str | None = None,
        who: str | None = None,
    ) -> Rollout: ...

    # -- variants (rules in registry.variants) ----------------------------------------
    def check_name_free(self, name: str, kind: Kind | None = None) -> None:
        """Raise unless a new record could take ``name`` now (a valid name, unused, and a
        writable registry): a long job such as ``quantize run`` checks before any work.
        With ``kind``, a name that already names a record of that kind passes (the write
        then adds a version, or finds the same content): what a push or ``base add``
        checks first."""
        ...

    def add_variant(
        self,
        path: PathLike,
        *,
        name: str,
        parent: str,
        quantization: dict[str, Any],
        fidelity: dict[str, Any],
        passed: bool,
        forced: bool,
        pairs: Sequence[PairInput],
        who: str | None = None,
        progress: bool | None = False,
    ) -> BaseModel:
        """Record ``path`` as variant ``name`` of base ``parent`` (lineage, fidelity, gate)
        with its adapter x variant results, in one transaction."""
        ...

    def record_pairs(
        self, variant: str, pairs: Sequence[PairInput], *, who: str | None = None
    ) -> None:
        """Record (or replace) adapter x ``variant`` results, e.g. from ``quantize eval``."""
        ...

    def log_variant_refused(
        self, name: str, detail: dict[str, Any], *, who: str | None = None
    ) -> None:
        """Log ``variant.refused``: a variant was made, missed its gate, was not recorded."""
        ...

    def variant(self, name: str) -> VariantInfo | None:
        """The variant record of base ``name``, or None when it is not a variant."""
        ...

    def variants_of(self, parent: str) -> list[VariantInfo]: ...

    def pair(self, adapter: AdapterVersion, variant: str) -> PairResult | None:
        """How ``adapter`` fared on ``variant`` (None: never evaluated there)."""
        ...

    def pairs_of(self, adapter: AdapterVersion) -> list[PairResult]: ...

    def pairs_on(self, variant: str) -> list[PairResult]: ...
