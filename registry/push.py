"""Pushing an adapter: validate, store blobs, then record the version in one transaction.

:func:`validate` touches no database (a remote client can run it before uploading).
:func:`record` stores blobs first (fsynced, renamed), then commits all metadata in one
``BEGIN IMMEDIATE`` transaction: a dataset given as a file, the manifest, the version
number, the ``production`` alias when this is the name's first version, any ``--alias``,
and their events. A process killed at any step leaves at most orphan blobs, never a
visible half-written version.

A push never changes what a live name serves: plain ``NAME`` means ``NAME@production``,
which only the first version takes on its own; later versions reach ``NAME`` only when
someone (or a rollout) moves the alias.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.adapter_bounds import Bounds
from registry.aliases import check_case, check_production_move
from registry.catalog import (
    StagedDataset,
    content_dataset_name,
    record_dataset,
    stage_dataset,
)
from registry.deps import Deps
from registry.digest import Digest, canonical_json, sha256_bytes
from registry.errors import AdapterProblem as P
from registry.errors import InvalidAdapterError
from registry.records import BaseModel, CodeLineage, PeftSummary, PushResult
from registry.refs import PRODUCTION
from registry.sql_store import Tx, now_iso
from registry.staging import store_files
from registry.validation import (
    AdapterDir,
    NormSource,
    check_against_base,
    check_chat_template,
    check_schema,
    load_schema_file,
    training_args,
)

#: The steps of a push, in order, as reported to :attr:`Deps.on_step`.
PUSH_STEPS = ("validated", "blob_temp_written", "blobs_stored", "in_transaction")


@dataclass(frozen=True, slots=True)
class ValidAdapter:
    """An adapter directory that passed every check against its base model."""

    adapter: AdapterDir
    base: BaseModel
    peft: PeftSummary
    template: str | None
    schema: dict[str, Any] | None
    meta: dict[str, Any]
    code: CodeLineage | None


@dataclass(frozen=True, slots=True)
class DatasetFile:
    """A dataset given as a file: recorded by content, under a name nobody had to invent."""

    path: Path


#: A recorded dataset's name, a file to record, or None for an explicitly unknown one.
DatasetChoice = str | DatasetFile | None

#: How ``--dataset`` is read, for messages and ``--help``.
DATASET_ARGUMENT_RULE = (
    "a file is taken only as a path (with a '/', or starting with '.' or '~': "
    "./data.jsonl); anything else is a registered dataset's name"
)


def dataset_argument(value: str | os.PathLike[str]) -> str | DatasetFile:
    """What a ``--dataset`` value means, from its spelling alone: never guessed from the
    disk or the registry (a dataset's name and a file of that name in the current
    directory would otherwise both fit). A path object, or a string with a path
    separator or a leading ``.`` or ``~``, is a file (no record name can be spelt so);
    any other string is a ref."""
    if not isinstance(value, str):
        return DatasetFile(Path(value))
    separators = {os.sep, os.altsep or os.sep}
    if any(sep in value for sep in separators) or value.startswith((".", "~")):
        try:
            return DatasetFile(Path(value).expanduser())
        except RuntimeError:  # ~USER of no known user: as written (then: no such file)
            return DatasetFile(Path(value))
    return value


def _schema(adapter: AdapterDir, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if schema is not None:
        return check_schema(schema, "--schema")
    in_dir = adapter.file("schema.json")
    return load_schema_file(in_dir) if in_dir is not None else None


def _meta(adapter: AdapterDir, meta: dict[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    args = training_args(adapter)
    if args is not None:
        merged["training_args"] = args
    merged.update(meta or {})
    try:
        canonical_json(merged)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidAdapterError(P.BAD_META, f"metadata is not JSON-serializable: {exc}") from None
    return merged


def validate(
    adapter: AdapterDir,
    base: BaseModel,
    *,
    max_lora_rank: int,
    bounds: Bounds | None = None,
    norms: NormSource | None = None,
    schema: dict[str, Any] | None,
    meta: dict[str, Any] | None,
    code: CodeLineage | None,
) -> ValidAdapter:
    """Every check against ``base`` (shapes, rank, targets, bounds, template, schema, meta)."""
    return ValidAdapter(
        adapter=adapter,
        base=base,
        peft=check_against_base(adapter, base, max_lora_rank, bounds=bounds, norms=norms),
        template=check_chat_template(adapter, base),
        schema=_schema(adapter, schema),
        meta=_meta(adapter, meta),
        code=code,
    )


def _dataset_in_tx(
    tx: Tx,
    deps: Deps,
    dataset: DatasetChoice,
    staged_file: StagedDataset | None,
    adapter_name: str,
    who: str,
) -> tuple[str | None, Digest | None]:
    """(name, digest) of the dataset, recording a staged file if its content is new."""
    if dataset is None:
        return None, None
    if isinstance(dataset, str):
        record = deps.store.dataset(dataset)
        assert record is not None, dataset
        return record.name, record.digest
    assert staged_file is not None
    found = deps.store.dataset_by_digest(staged_file.digest)
    if found is not None:
        return found.name, found.digest
    name = content_dataset_name(
        staged_file.filename,
        staged_file.digest,
        lambda n: n == adapter_name or deps.store.kind_of(n) is not None,
    )
    record_dataset(tx, staged_file, name=name, license=None, who=who, at=now_iso())
    return name, staged_file.digest


def record(
    deps: Deps,
    valid: ValidAdapter,
    *,
    name: str,
    dataset: DatasetChoice,
    alias: str | None,
    who: str | None,
    progress: bool | None,
) -> PushResult:
    """Store the blobs, then record the version (or find the identical one)."""
    deps.reached("validated")
    staged = stage_dataset(deps, dataset.path) if isinstance(dataset, DatasetFile) else None
    entries = store_files(
        deps.blobs,
        valid.adapter.files,
        f"push {name}",
        progress=progress,
        progress_min_bytes=deps.settings.progress_min_bytes,
        first_temp_written=lambda: deps.reached("blob_temp_written"),
    )
    deps.reached("blobs_stored")
    by, at = deps.who(who), now_iso()
    with deps.store.write() as tx:
        dataset_name, dataset_digest = _dataset_in_tx(tx, deps, dataset, staged, name, by)
        digest = tx.insert_manifest(entries)
        identity = sha256_bytes(
            canonical_json([digest, valid.base.digest, dataset_digest, valid.schema])
        )
        version = tx.version_with_identity(name, identity)
        created = version is None
        if version is None:
            version = tx.insert_adapter(
                name=name,
                digest=digest,
                base=valid.base.name,
                dataset=dataset_name,
                peft=valid.peft,
                peft_config=valid.adapter.config,
                template=valid.template,
                schema=valid.schema,
                identity=identity,
                meta=valid.meta,
                code=valid.code,
                who=by,
                at=at,
            )
            if version == 1:
                tx.move_alias(name=name, alias=PRODUCTION, version=version, who=by, at=at)
        if alias is not None:
            check_case(alias, deps.store.aliases_of(name))
        if alias == PRODUCTION:
            check_production_move(deps.store, name, version)
        if alias is not None:
            tx.move_alias(name=name, alias=alias, version=version, who=by, at=at)
        deps.reached("in_transaction")
    result = deps.store.adapter(name, version)
    assert result is not None
    return PushResult(result, created)
