"""The registry in-process: its records in a :class:`SqlStore` (``registry.db`` in a
directory, or a PostgreSQL database), its bytes in a blob store.

:class:`LocalRegistry` implements :class:`registry.Registry` by composition: reads go
to its :class:`SqlStore`; writes are use cases (:mod:`registry.push`,
:mod:`registry.catalog`, :mod:`registry.transfer`, :mod:`registry.rollouts`,
:mod:`registry.variants`) run over narrow :class:`Deps`. This class resolves refs and
turns arguments into what those use cases take; it holds no SQL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from registry import aliases, catalog, push, quarantine, rollouts, transfer, variants
from registry.bases import pick_base
from registry.blobs import BlobStore, FileBlobStore
from registry.deps import Deps, StepHook
from registry.digest import Digest
from registry.errors import (
    AdapterProblem,
    AliasInUseError,
    AmbiguousRefError,
    InUseError,
    InvalidAdapterError,
    InvalidRefError,
    RefNotFoundError,
    RegistryError,
)
from registry.names import check_new_name
from registry.prepare import PushRequest, prepare_push
from registry.protocol import PathLike
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
    a_kind,
)
from registry.refs import (
    PRODUCTION,
    AliasRef,
    DigestRef,
    VersionRef,
    check_alias,
    check_name,
    parse_ref,
)
from registry.rollouts import Outcome as RolloutOutcome
from registry.settings import RegistrySettings
from registry.sql_store import SqlStore, now_iso
from registry.targets import dead_version
from registry.validation import inspect_adapter_dir

#: How often :meth:`LocalRegistry.wait_for_change` reads the token: a change is seen
#: within about a second, as promised, with a fifth of a second to spare per poll. Each
#: poll wakes a thread and reads the database: at 50 ms those cost a gateway that watches
#: a directory 3 ms of CPU a second, idle or not (bench/gateway_cpu.py `idle_cpu_ms_per_s`;
#: bench/README.md, "A lean request path").
WATCH_POLL_S = 0.2


class LocalRegistry:
    """A registry opened in this process (a directory, or PostgreSQL + a blob store).
    Thread-safe; one database connection. ``root``: the directory (for a registry on
    servers, where this host keeps a server's scratch); ``location``: what a CLI takes
    (default: ``root``)."""

    def __init__(
        self,
        root: Path,
        store: SqlStore,
        settings: RegistrySettings,
        *,
        on_step: StepHook | None = None,
        blobs: BlobStore | None = None,
        location: str | None = None,
    ) -> None:
        self.root = root
        self._location = location if location is not None else str(root)
        self.store = store
        self.settings = settings
        self.blobs: BlobStore = blobs if blobs is not None else FileBlobStore(root / "blobs")
        self.deps = Deps(store, self.blobs, settings, on_step)

    @property
    def location(self) -> str:
        return self._location

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    def __enter__(self) -> LocalRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- resolution -------------------------------------------------------------------
    def resolve(self, ref: str) -> Resolved:
        """What ``ref`` points at now; raise RefNotFound/InvalidRef/AmbiguousRef."""
        parsed = parse_ref(ref)
        if isinstance(parsed, DigestRef):
            return self._resolve_digest(parsed.digest)
        name = parsed.name
        kind = self.store.kind_of(name)
        if kind is None:
            raise RefNotFoundError(f"nothing named {name!r} in the registry; see `registry ls`")
        if kind != "adapter":
            if isinstance(parsed, VersionRef | AliasRef):
                raise InvalidRefError(
                    f"{name} is {a_kind(kind)}: it has no versions or aliases; name it as {name}"
                )
            found = self.store.record_digest(kind, name)
            if found is None or not found[1]:
                raise RefNotFoundError(f"{kind} {name} was removed")
            return Resolved(kind, name, None, found[0])
        if isinstance(parsed, VersionRef):
            version = parsed.version
        else:
            alias = parsed.alias if isinstance(parsed, AliasRef) else PRODUCTION
            target = self.store.alias_target(name, alias)
            if target is None:
                plain = not isinstance(parsed, AliasRef)
                raise RefNotFoundError(self._no_alias(name, alias, plain=plain))
            version = target
        found_version = self.store.version_digest(name, version)
        problem = dead_version(name, version, None if found_version is None else found_version[1])
        if problem is not None:
            raise problem
        assert found_version is not None
        return Resolved("adapter", name, version, found_version[0])

    def _no_alias(self, name: str, alias: str, *, plain: bool) -> str:
        live = self.store.live_versions(name)
        if not live:
            return f"every version of {name} was removed"
        versions = ", ".join(f"{name}@{v}" for v in live)
        example = live[-1]
        if alias == PRODUCTION and plain:
            return (
                f"{name} has no production alias, so plain {name!r} names no version "
                f"(versions: {versions}); ask for one ({name}@{example}) or point the "
                f"alias: `registry alias set {name} production {example}`"
            )
        known = ", ".join(self.store.aliases_of(name)) or "none"
        return (
            f"{name} has no alias {alias!r} (aliases: {known}; versions: {versions}); "
            f"set it with `registry alias set {name} {alias} N`"
        )

    def _resolve_digest(self, digest: Digest) -> Resolved:
        found = self.store.by_digest(digest)
        if not found:
            raise RefNotFoundError(f"nothing live in the registry has digest {digest}")
        if len(found) > 1:
            choices = ", ".join(n if v is None else f"{n}@{v}" for _, n, v in found)
            raise AmbiguousRefError(
                f"{digest} is the content of several records ({choices}); name one of them"
            )
        kind, name, version = found[0]
        return Resolved(kind, name, version, digest)

    # -- records ----------------------------------------------------------------------
    def adapter(self, ref: str) -> AdapterVersion:
        """The adapter version ``ref`` resolves to."""
        resolved = self.resolve(ref)
        record = None
        if resolved.kind == "adapter" and resolved.version is not None:
            record = self.store.adapter(resolved.name, resolved.version)
        if record is None:
            raise RefNotFoundError(f"{ref} is {a_kind(resolved.kind)}, not an adapter")
        return record

    def base(self, ref: str) -> BaseModel:
        """The base model ``ref`` names (NAME or its sha256 digest)."""
        resolved = self.resolve(ref)
        record = self.store.base(resolved.name) if resolved.kind == "base" else None
        if record is None:
            raise RefNotFoundError(f"{ref} is {a_kind(resolved.kind)}, not a base model")
        return record

    def dataset(self, ref: str) -> Dataset:
        """The dataset ``ref`` names."""
        resolved = self.resolve(ref)
        record = self.store.dataset(resolved.name) if resolved.kind == "dataset" else None
        if record is None:
            raise RefNotFoundError(f"{ref} is {a_kind(resolved.kind)}, not a dataset")
        return record

    def list_adapters(self, name: str | None = None) -> list[AdapterVersion]:
        """Live adapter versions ordered by name, version."""
        return self.store.adapters(name)

    def list_bases(self) -> list[BaseModel]:
        return self.store.bases()

    def list_datasets(self) -> list[Dataset]:
        return self.store.datasets()

    def aliases(self, name: str) -> dict[str, int]:
        """alias -> version for adapter ``name``."""
        return self.store.aliases_of(name)

    def events(self, name: str | None = None) -> list[Event]:
        """The event log, oldest first (optionally for one name)."""
        return self.store.events(name)

    def clock(self) -> float:
        """The registry's clock (its database's: one clock for every server sharing it),
        what leases are written and compared on."""
        return self.store.clock()

    def change_token(self) -> int:
        """Grows whenever a push, alias move or removal is committed (the last event id)."""
        return self.store.change_token()

    def wait_for_change(self, since: int, *, timeout_s: float) -> int:
        """Poll the token (every WATCH_POLL_S: SQLite has no notification) until it moves."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            token = self.store.change_token()
            if token != since or time.monotonic() >= deadline:
                return token
            time.sleep(min(WATCH_POLL_S, max(0.0, deadline - time.monotonic())))

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
    ) -> PushResult:
        """Validate and record a PEFT LoRA directory as a new version of ``name``.

        ``dataset`` is a dataset ref or a file (recorded by content: the same bytes are
        the same dataset, under a name that never collides with ``name``); ``schema`` a
        JSON Schema (dict or file; else ``schema.json`` in the dir); ``code`` a directory
        in the training code's git work tree, or ``git_sha`` its commit (default: the
        adapter directory's work tree, if any). Identical content (same files, base,
        dataset and schema) returns the existing version with ``created=False``. The
        first version of a name takes the ``production`` alias.
        """
        plan = prepare_push(
            path,
            name=name,
            base=base,
            dataset=dataset,
            allow_unknown_dataset=allow_unknown_dataset,
            alias=alias,
            schema=schema,
            meta=meta,
            code=code,
            git_sha=git_sha,
        )
        return self.push_request(
            plan.request, plan.source, plan.dataset_file, who=who, progress=progress
        )

    def push_request(
        self,
        request: PushRequest,
        source: Path,
        dataset_file: Path | None,
        *,
        who: str | None = None,
        progress: bool | None = False,
    ) -> PushResult:
        """The registry's half of a push (see :mod:`registry.prepare`): every file under
        ``source`` is read and checked again here, whoever prepared the request."""
        name = check_name(request.name)
        if request.alias is not None:
            check_alias(request.alias)
        check_new_name(self.store, name, "adapter")  # before any work
        adapter = inspect_adapter_dir(source, self.settings.max_file_bytes)
        hint = adapter.config.get("base_model_name_or_path")
        try:
            base_model = pick_base(self, request.base, hint=hint if isinstance(hint, str) else None)
        except (RefNotFoundError, AmbiguousRefError) as exc:
            raise InvalidAdapterError(
                AdapterProblem.BASE_MODEL_UNKNOWN,
                f"which base model? {exc} (add one with `registry base add DIR --name NAME`, "
                "or pass --base NAME)",
            ) from None
        chosen = self._dataset_choice(request, dataset_file)
        valid = push.validate(
            adapter,
            base_model,
            max_lora_rank=self.settings.max_lora_rank,
            bounds=self.settings.bounds(),
            norms=lambda modules: catalog.base_norms(self.deps, base_model, modules),
            schema=request.schema,
            meta=request.meta,
            code=request.code,
        )
        return push.record(
            self.deps,
            valid,
            name=name,
            dataset=chosen,
            alias=request.alias,
            who=who,
            progress=progress,
        )

    def _dataset_choice(
        self, request: PushRequest, dataset_file: Path | None
    ) -> push.DatasetChoice:
        if dataset_file is not None:
            return push.DatasetFile(dataset_file)
        chosen = request.dataset
        if chosen is None:
            if not request.allow_unknown_dataset:
                raise InvalidAdapterError(
                    AdapterProblem.DATASET_REQUIRED,
                    "lineage needs the training dataset: pass --dataset NAME (registered) or "
                    "--dataset ./FILE, or --allow-unknown-dataset to record it as unknown",
                )
            return None
        try:
            found = self.resolve(chosen)
        except RegistryError as exc:
            here = (
                f"; to record the file {chosen} here, write ./{chosen}"
                if request.dataset_file_nearby
                else ""
            )
            raise InvalidAdapterError(
                AdapterProblem.DATASET_REQUIRED,
                f"no dataset {chosen!r} in the registry ({exc}){here}; "
                f"{push.DATASET_ARGUMENT_RULE}",
            ) from None
        if found.kind != "dataset":
            raise InvalidAdapterError(
                AdapterProblem.DATASET_REQUIRED,
                f"{chosen} is {a_kind(found.kind)}, not a dataset; {push.DATASET_ARGUMENT_RULE}",
            )
        return found.name

    def add_base(
        self,
        path: PathLike,
        *,
        name: str,
        license: str | None = None,
        who: str | None = None,
        progress: bool | None = False,
    ) -> BaseModel:
        """Record a base model directory (config, weights, tokenizer, chat template)."""
        return catalog.add_base(
            self.deps, Path(path), name=name, license=license, who=who, progress=progress
        )

    def add_dataset(
        self, path: PathLike, *, name: str, license: str | None = None, who: str | None = None
    ) -> Dataset:
        """Record a dataset file (content digest, record count, license)."""
        return catalog.add_dataset(self.deps, Path(path), name=name, license=license, who=who)

    def set_alias(self, name: str, alias: str, version: int, *, who: str | None = None) -> None:
        """Point ``name@alias`` at ``version`` (a live version; rules in registry.aliases)."""
        aliases.set_alias(self.deps, name, alias, version, who=who)

    def remove_alias(self, name: str, alias: str, *, who: str | None = None) -> None:
        """Delete ``name@alias`` (rules in registry.aliases)."""
        aliases.remove_alias(self.deps, name, alias, who=who)

    def remove(self, ref: str, *, who: str | None = None) -> Resolved:
        """Soft-delete what ``ref`` resolves to; refused while something points at it."""
        target = self.resolve(ref)
        with self.store.write() as tx:
            if target.kind == "adapter":
                pointing = [
                    a for a, v in self.store.aliases_of(target.name).items() if v == target.version
                ]
                rollout = self.store.active_rollout(target.name)
                if rollout is not None and target.version in (rollout.stable, rollout.canary):
                    raise InUseError(
                        f"{target.name}@{target.version} is in active rollout #{rollout.id}; "
                        f"end it first (`deploy abort {target.name}`)"
                    )
                if pointing:
                    raise AliasInUseError(
                        f"{target.name}@{target.version} is aliased as {', '.join(pointing)}; "
                        f"move the alias first (`registry alias set {target.name} ALIAS N` "
                        f"or `registry alias rm {target.name} ALIAS`)"
                    )
            else:
                users = self.store.users_of(target.kind, target.name)
                if users:
                    raise InUseError(
                        f"{target.kind} {target.name} is used by {', '.join(users[:10])}; "
                        "remove those first"
                    )
            tx.remove(
                kind=target.kind,
                name=target.name,
                version=target.version,
                digest=target.digest,
                who=self.deps.who(who),
                at=now_iso(),
            )
        return target

    def pull(self, ref: str, dest: PathLike, *, progress: bool | None = False) -> Path:
        """Materialise ``ref`` at ``dest`` (verified, atomic); see :mod:`registry.transfer`."""
        return transfer.pull(self.deps, self.resolve(ref), ref, Path(dest), progress=progress)

    def verify(
        self, ref: str | None = None, *, gc: bool = False, gc_grace_s: float = 3600.0
    ) -> VerifyReport:
        """Re-hash stored blobs (all, or those of ``ref``); optionally collect orphans."""
        target = self.resolve(ref) if ref is not None else None
        return transfer.verify(self.deps, target, ref or "", gc=gc, gc_grace_s=gc_grace_s)

    def gc(self, *, grace_s: float = 3600.0) -> GcReport:
        """Collect orphan blobs and temp files older than ``grace_s``; see
        :func:`registry.transfer.collect_garbage`."""
        self.store.check_writable()
        return transfer.collect_garbage(self.deps, grace_s)

    # -- quarantine (registry.quarantine) ----------------------------------------------
    def quarantine(self, ref: str, *, reason: str, who: str | None = None) -> AdapterVersion:
        """Refuse the adapter version ``ref`` names everywhere, for ``reason``."""
        record = self.adapter(ref)
        return quarantine.quarantine(self.deps, record.name, record.version, reason=reason, who=who)

    def lift_quarantine(self, ref: str, *, who: str | None = None) -> AdapterVersion:
        """Serve the adapter version ``ref`` names again."""
        record = self.adapter(ref)
        return quarantine.lift(self.deps, record.name, record.version, who=who)

    def quarantined(self) -> list[AdapterVersion]:
        """Live adapter versions under quarantine."""
        return self.store.quarantined()

    # -- rollouts (the use cases and their rules: registry.rollouts) --------------------
    def start_rollout(
        self,
        name: str,
        canary: int,
        *,
        steps: Sequence[float],
        plan: dict[str, Any] | None = None,
        who: str | None = None,
    ) -> Rollout:
        """Begin splitting ``name`` between production and ``canary`` (first step's weight)."""
        return rollouts.start(self.deps, name, canary, steps=steps, plan=plan, who=who)

    def rollout(self, name: str) -> Rollout | None:
        """The active rollout of ``name`` (with its analyses), or None."""
        return rollouts.active(self.deps, name)

    def rollouts(self, name: str) -> list[Rollout]:
        """Every rollout of ``name``, oldest first."""
        return rollouts.history(self.deps, name)

    def claim_rollout(
        self, name: str, rollout_id: int, holder: str, *, ttl_s: float, who: str | None = None
    ) -> Rollout:
        """Take or renew the controller lease on a rollout (LeaseHeldError if taken)."""
        return rollouts.claim(self.deps, name, rollout_id, holder, ttl_s=ttl_s, who=who)

    def release_rollout(self, name: str, rollout_id: int, holder: str) -> None:
        rollouts.release(self.deps, name, rollout_id, holder)

    def advance_rollout(
        self,
        name: str,
        rollout_id: int,
        step: int,
        *,
        holder: str | None = None,
        reason: str = "",
        who: str | None = None,
    ) -> Rollout:
        """Move a rollout to its next step (compare-and-set on the step)."""
        return rollouts.advance(
            self.deps, name, rollout_id, step, holder=holder, reason=reason, who=who
        )

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
    ) -> None:
        """Record one judgement of step ``step`` of a rollout."""
        rollouts.record_analysis(
            self.deps,
            name,
            rollout_id,
            step=step,
            verdict=verdict,
            reason=reason,
            figures=figures,
            holder=holder,
            who=who,
        )

    def end_rollout(
        self,
        name: str,
        rollout_id: int | None,
        outcome: RolloutOutcome,
        *,
        reason: str,
        holder: str | None = None,
        who: str | None = None,
    ) -> Rollout:
        """Promote (production moves), roll back or abort the active rollout."""
        return rollouts.end(
            self.deps, name, rollout_id, outcome, reason=reason, holder=holder, who=who
        )

    # -- variants (the write use cases: registry.variants) -----------------------------
    def check_name_free(self, name: str, kind: Kind | None = None) -> None:
        """Refuse now, before any work, a new name that is invalid or taken (or a
        read-only registry): what a long job such as ``quantize run`` checks first."""
        check_new_name(self.store, name, kind)

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
        """Record the model directory ``path`` as variant ``name`` of base ``parent``, with
        its lineage, fidelity and pair results, in one transaction."""
        self.check_name_free(name)  # before the parent, as before any work
        return variants.add(
            self.deps,
            Path(path),
            name=name,
            parent=self.base(parent),
            quantization=quantization,
            fidelity=fidelity,
            passed=passed,
            forced=forced,
            pairs=pairs,
            who=who,
            progress=progress,
        )

    def record_pairs(
        self, variant: str, pairs: Sequence[PairInput], *, who: str | None = None
    ) -> None:
        """Record (or replace) how each adapter version fares on ``variant``."""
        variants.record_pairs(self.deps, variant, pairs, who=who)

    def log_variant_refused(
        self, name: str, detail: dict[str, Any], *, who: str | None = None
    ) -> None:
        """Log ``variant.refused``: a variant was made, missed its gate, was not recorded."""
        variants.log_refused(self.deps, name, detail, who=who)

    def variant(self, name: str) -> VariantInfo | None:
        """The variant record of base ``name``, or None when it is not a variant."""
        return self.store.variant(name)

    def variants_of(self, parent: str) -> list[VariantInfo]:
        """The live variants of base ``parent``, by name."""
        return self.store.variants_of(parent)

    def pair(self, adapter: AdapterVersion, variant: str) -> PairResult | None:
        """How ``adapter`` fared on ``variant`` (None: never evaluated there)."""
        return self.store.pair(adapter.name, adapter.version, variant)

    def pairs_of(self, adapter: AdapterVersion) -> list[PairResult]:
        """Every variant ``adapter`` was evaluated on, and how it fared, by variant."""
        return self.store.pairs_of(adapter.name, adapter.version)

    def pairs_on(self, variant: str) -> list[PairResult]:
        """Every adapter version evaluated on ``variant``, by adapter."""
        return self.store.pairs_on(variant)
