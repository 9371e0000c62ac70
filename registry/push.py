"""Pushing an adapter: validate, store blobs, then record the version.

A push validates first (nothing written on failure), then stores blobs (fsynced,
renamed), then commits all metadata in one ``BEGIN IMMEDIATE`` transaction that
allocates the version number. A process killed at any step leaves at most orphan
blobs, never a visible half-written version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry import catalog
from registry.digest import canonical_json
from registry.digest import sha256_bytes as _sha256
from registry.errors import AdapterProblem as P
from registry.errors import (
    InvalidAdapterError,
    NameConflictError,
    RefNotFoundError,
    RegistryError,
)
from registry.records import BaseModel, PeftSummary, PushResult
from registry.refs import check_alias, check_name
from registry.sqlite_store import add_event, move_alias, now_iso
from registry.staging import check_kind, claim_name, insert_manifest, store_files
from registry.validation import (
    AdapterDir,
    check_against_base,
    check_chat_template,
    check_schema,
    inspect_adapter_dir,
    load_schema_file,
    training_args,
)

if TYPE_CHECKING:
    import sqlite3

    from registry.local import Registry


def _pick_base(reg: Registry, base: str | None, config: dict[str, Any]) -> BaseModel:
    if base is not None:
        try:
            return reg.base(base)
        except RefNotFoundError as exc:
            raise InvalidAdapterError(
                P.BASE_MODEL_UNKNOWN,
                f"base model {base!r} is not in the registry ({exc}); add it first with "
                f"`registry base add DIR --name NAME`",
            ) from None
    bases = reg.list_bases()
    if len(bases) == 1:
        return bases[0]
    if not bases:
        raise InvalidAdapterError(
            P.BASE_MODEL_UNKNOWN,
            "no base model is registered; add the one the adapter was trained on with "
            "`registry base add DIR --name NAME`",
        )
    hint = Path(str(config.get("base_model_name_or_path") or "")).name
    for candidate in bases:
        if candidate.name == hint:
            return candidate
    names = ", ".join(b.name for b in bases)
    raise InvalidAdapterError(
        P.BASE_MODEL_UNKNOWN, f"several base models are registered ({names}); pass --base NAME"
    )


def _schema(adapter: AdapterDir, schema: dict[str, Any] | str | Path | None) -> Any:
    if isinstance(schema, dict):
        return check_schema(schema, "--schema")
    if schema is not None:
        return load_schema_file(Path(schema))
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
    except (TypeError, ValueError) as exc:
        raise InvalidAdapterError(P.BAD_META, f"metadata is not JSON-serializable: {exc}") from None
    return merged


def _dataset(
    reg: Registry, adapter_name: str, dataset: str | Path | None, allow_unknown: bool
) -> tuple[Path | None, str | None]:
    """(file to add, existing dataset ref); both None for an explicitly unknown dataset."""
    if dataset is None:
        if not allow_unknown:
            raise InvalidAdapterError(
                P.DATASET_REQUIRED,
                "lineage needs the training dataset: pass --dataset REF|FILE, or "
                "--allow-unknown-dataset to record it as unknown",
            )
        return None, None
    if Path(dataset).is_file():
        stem = Path(dataset).stem
        if stem == adapter_name or reg.store.kind_of(stem) not in (None, "dataset"):
            raise NameConflictError(
                f"dataset file {dataset} would be recorded as {stem!r}, a name already taken; "
                f"run `registry dataset add {dataset} --name OTHER` and pass --dataset OTHER"
            )
        return Path(dataset), None
    try:
        found = reg.resolve(str(dataset))
    except RegistryError as exc:
        raise InvalidAdapterError(
            P.DATASET_REQUIRED, f"dataset {dataset!r} is neither a file nor in the registry: {exc}"
        ) from None
    if found.kind != "dataset":
        raise InvalidAdapterError(P.DATASET_REQUIRED, f"{dataset} is a {found.kind}, not a dataset")
    return None, found.name


def _insert_version(
    conn: sqlite3.Connection,
    *,
    name: str,
    digest: str,
    base: BaseModel,
    dataset: dict[str, Any] | None,
    adapter: AdapterDir,
    peft: PeftSummary,
    template: str | None,
    schema: Any,
    identity: str,
    meta: dict[str, Any],
    by: str,
    at: str,
) -> int:
    """Allocate the next version of ``name`` and insert it (inside the caller's transaction)."""
    claim_name(conn, name, "adapter", at)
    version = int(
        conn.execute(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM adapters WHERE name = ?", (name,)
        ).fetchone()[0]
    )
    base_id = conn.execute("SELECT id FROM bases WHERE name = ?", (base.name,))
    conn.execute(
        "INSERT INTO adapters (name, version, digest, base_id, dataset_id, dataset_unknown,"
        " r, lora_alpha, target_modules, lora_dropout, peft_config, chat_template_digest,"
        " schema, identity, meta, created_by, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            name,
            version,
            digest,
            base_id.fetchone()[0],
            dataset["id"] if dataset else None,
            0 if dataset else 1,
            peft.r,
            peft.lora_alpha,
            json.dumps(list(peft.target_modules)),
            peft.lora_dropout,
            json.dumps(adapter.config, sort_keys=True),
            template,
            json.dumps(schema) if schema is not None else None,
            identity,
            json.dumps(meta, sort_keys=True),
            by,
            at,
        ),
    )
    add_event(
        conn,
        at=at,
        who=by,
        action="push",
        name=name,
        version=version,
        detail={
            "digest": digest,
            "base": base.name,
            "dataset": dataset["name"] if dataset else None,
        },
    )
    return version


def push_adapter(
    reg: Registry,
    path: Path,
    *,
    name: str | None = None,
    base: str | None = None,
    dataset: str | Path | None = None,
    allow_unknown_dataset: bool = False,
    alias: str | None = None,
    schema: dict[str, Any] | str | Path | None = None,
    meta: dict[str, Any] | None = None,
    who: str | None = None,
    progress: bool | None = False,
) -> PushResult:
    """Validate a PEFT LoRA directory, store it, and record a new version (or find it)."""
    name = check_name(name or path.resolve().name)
    if alias is not None:
        check_alias(alias)
    check_kind(reg, name, "adapter")
    adapter = inspect_adapter_dir(path, reg.settings.max_file_bytes)
    base_model = _pick_base(reg, base, adapter.config)
    peft = check_against_base(adapter, base_model, reg.settings.max_lora_rank)
    template = check_chat_template(adapter, base_model)
    schema_obj = _schema(adapter, schema)
    merged_meta = _meta(adapter, meta)
    dataset_file, dataset_name = _dataset(reg, name, dataset, allow_unknown_dataset)
    reg.reached("validated")
    if dataset_file is not None:
        dataset_name = catalog.add_dataset(reg, dataset_file, name=dataset_file.stem, who=who).name
    entries = store_files(reg, adapter.files, f"push {name}", progress)
    reg.reached("blobs_stored")
    by, at = reg.who(who), now_iso()
    with reg.store.write() as conn:
        digest = insert_manifest(conn, entries)
        ds = reg.store.dataset_row(dataset_name) if dataset_name else None
        identity = _sha256(
            canonical_json([digest, base_model.digest, ds["digest"] if ds else None, schema_obj])
        )
        existing = conn.execute(
            "SELECT version FROM adapters WHERE name = ? AND identity = ? AND removed_at IS NULL "
            "ORDER BY version LIMIT 1",
            (name, identity),
        ).fetchone()
        if existing is not None:
            version, created = int(existing[0]), False
        else:
            version = _insert_version(
                conn,
                name=name,
                digest=digest,
                base=base_model,
                dataset=ds,
                adapter=adapter,
                peft=peft,
                template=template,
                schema=schema_obj,
                identity=identity,
                meta=merged_meta,
                by=by,
                at=at,
            )
            created = True
        if alias is not None:
            move_alias(conn, name=name, alias=alias, version=version, who=by, at=at)
        reg.reached("in_transaction")
    return PushResult(reg.adapter(f"{name}@{version}"), created)
