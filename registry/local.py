"""The embedded registry: a directory holding ``registry.db`` and ``blobs/``.

:class:`Registry` is the library's entry point (``registry.open(...)``). Reads are
methods here; writes live in :mod:`registry.push` (adapters), :mod:`registry.catalog`
(bases, datasets) and :mod:`registry.transfer` (pull and verify).
"""

from __future__ import annotations

import getpass
import os
import signal
from pathlib import Path
from typing import Any

from registry import catalog, push, transfer
from registry.blobs import FileBlobStore
from registry.errors import (
    AliasInUseError,
    AmbiguousRefError,
    InUseError,
    InvalidRefError,
    RefNotFoundError,
)
from registry.records import (
    AdapterVersion,
    BaseModel,
    Dataset,
    Event,
    PushResult,
    Resolved,
    VerifyReport,
)
from registry.refs import PRODUCTION, AliasRef, DigestRef, NameRef, VersionRef, check_alias
from registry.refs import parse_ref as _parse_ref
from registry.settings import RegistrySettings
from registry.sqlite_store import (
    SqliteStore,
    adapter_from_row,
    add_event,
    base_from_row,
    dataset_from_row,
    move_alias,
    now_iso,
)

PathLike = str | os.PathLike[str]


class Registry:
    """A registry stored in one directory. Thread-safe; one SQLite connection."""

    def __init__(self, root: Path, settings: RegistrySettings) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.settings = settings
        self.blobs = FileBlobStore(root / "blobs")
        self.store = SqliteStore(root / "registry.db", settings.busy_timeout_s)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    def who(self, who: str | None) -> str:
        if who:
            return who
        if self.settings.user:
            return self.settings.user
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return "unknown"

    def reached(self, step: str) -> None:
        """Test hook: die like a killed process when a push reaches ``step``."""
        if self.settings.crash_after_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    # -- resolution -------------------------------------------------------------------
    def resolve(self, ref: str) -> Resolved:
        """What ``ref`` points at now; raise RefNotFound/InvalidRef/AmbiguousRef."""
        parsed = _parse_ref(ref)
        if isinstance(parsed, DigestRef):
            return self._resolve_digest(parsed.digest)
        name = parsed.name
        kind = self.store.kind_of(name)
        if kind is None:
            raise RefNotFoundError(f"nothing named {name!r} in the registry; see `registry ls`")
        if kind != "adapter":
            if not isinstance(parsed, NameRef):
                raise InvalidRefError(f"{name} is a {kind}: it has no versions or aliases")
            row = self.store.base_row(name) if kind == "base" else self.store.dataset_row(name)
            if row is None or row["removed_at"] is not None:
                raise RefNotFoundError(f"{kind} {name} was removed")
            return Resolved(kind, name, None, row["digest"])
        if isinstance(parsed, VersionRef):
            version = parsed.version
        elif isinstance(parsed, AliasRef):
            target = self.store.alias_target(name, parsed.alias)
            if target is None:
                known = ", ".join(self.store.aliases_of(name)) or "none"
                raise RefNotFoundError(f"{name} has no alias {parsed.alias!r} (aliases: {known})")
            version = target
        else:
            target = self.store.alias_target(name, PRODUCTION)
            if target is None:
                return self._only_version(name)
            version = target
        found = self.store.version_digest(name, version)
        if found is None:
            raise RefNotFoundError(f"{name} has no version {version}")
        if not found[1]:
            raise RefNotFoundError(f"{name}@{version} was removed")
        return Resolved("adapter", name, version, found[0])

    def _only_version(self, name: str) -> Resolved:
        live = self.store.live_versions(name, limit=2)
        if not live:
            raise RefNotFoundError(f"every version of {name} was removed")
        if len(live) > 1:
            choices = ", ".join(f"{name}@{v}" for v, _ in self.store.live_versions(name))
            raise AmbiguousRefError(
                f"{name} has several versions ({choices}) and no production alias; "
                f"name one, or run `registry alias set {name} production N`"
            )
        version, digest = live[0]
        return Resolved("adapter", name, version, digest)

    def _resolve_digest(self, digest: str) -> Resolved:
        found = self.store.by_digest(digest)
        if not found:
            raise RefNotFoundError(f"nothing live in the registry has digest {digest}")
        if len(found) > 1:
            choices = ", ".join(n if v is None else f"{n}@{v}" for _, n, v in found)
            raise AmbiguousRefError(f"{digest} is the content of several records: {choices}")
        kind, name, version = found[0]
        return Resolved(kind, name, version, digest)

    # -- records ----------------------------------------------------------------------
    def adapter(self, ref: str) -> AdapterVersion:
        """The adapter version ``ref`` resolves to."""
        resolved = self.resolve(ref)
        if resolved.kind != "adapter" or resolved.version is None:
            raise RefNotFoundError(f"{ref} is a {resolved.kind}, not an adapter")
        return self._adapter_version(resolved.name, resolved.version)

    def _adapter_version(self, name: str, version: int) -> AdapterVersion:
        row = self.store.adapter_row(name, version)
        if row is None:
            raise RefNotFoundError(f"{name} has no version {version}")
        aliases = tuple(a for a, v in self.store.aliases_of(name).items() if v == version)
        return adapter_from_row(row, aliases)

    def base(self, ref: str) -> BaseModel:
        """The base model ``ref`` names (NAME or its sha256 digest)."""
        resolved = self.resolve(ref)
        row = self.store.base_row(resolved.name) if resolved.kind == "base" else None
        if row is None:
            raise RefNotFoundError(f"{ref} is a {resolved.kind}, not a base model")
        parent = None
        if row["parent_id"] is not None:
            parent_row = self.store.one("SELECT name FROM bases WHERE id = ?", (row["parent_id"],))
            parent = parent_row["name"] if parent_row else None
        return base_from_row(row, parent)

    def dataset(self, ref: str) -> Dataset:
        """The dataset ``ref`` names."""
        resolved = self.resolve(ref)
        row = self.store.dataset_row(resolved.name) if resolved.kind == "dataset" else None
        if row is None:
            raise RefNotFoundError(f"{ref} is a {resolved.kind}, not a dataset")
        return dataset_from_row(row)

    def list_adapters(self, name: str | None = None) -> list[AdapterVersion]:
        """Live adapter versions ordered by name, version."""
        aliases: dict[tuple[str, int], list[str]] = {}
        for r in self.store.all("SELECT name, alias, version FROM aliases ORDER BY alias"):
            aliases.setdefault((r["name"], r["version"]), []).append(r["alias"])
        return [
            adapter_from_row(row, tuple(aliases.get((row["name"], row["version"]), ())))
            for row in self.store.adapter_rows(name)
        ]

    def list_bases(self) -> list[BaseModel]:
        return [self.base(row["name"]) for row in self.store.base_rows()]

    def list_datasets(self) -> list[Dataset]:
        return [dataset_from_row(row) for row in self.store.dataset_rows()]

    def aliases(self, name: str) -> dict[str, int]:
        """alias -> version for adapter ``name``."""
        return self.store.aliases_of(name)

    def events(self, name: str | None = None) -> list[Event]:
        """The event log, oldest first (optionally for one name)."""
        return self.store.events(name)

    def change_token(self) -> int:
        """Grows whenever a push, alias move or removal is committed (the last event id)."""
        return self.store.change_token()

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
        who: str | None = None,
        progress: bool | None = False,
    ) -> PushResult:
        """Validate and record a PEFT LoRA directory as a new version of ``name``.

        ``dataset`` is a dataset ref or a file (added as a dataset named after its stem);
        ``schema`` a JSON Schema (dict or file; else ``schema.json`` in the dir). Identical
        content (same files, base, dataset and schema) returns the existing version with
        ``created=False``.
        """
        return push.push_adapter(
            self,
            Path(path),
            name=name,
            base=base,
            dataset=Path(dataset) if isinstance(dataset, os.PathLike) else dataset,
            allow_unknown_dataset=allow_unknown_dataset,
            alias=alias,
            schema=schema if isinstance(schema, dict | None) else Path(schema),
            meta=meta,
            who=who,
            progress=progress,
        )

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
            self, Path(path), name=name, license=license, who=who, progress=progress
        )

    def add_dataset(
        self, path: PathLike, *, name: str, license: str | None = None, who: str | None = None
    ) -> Dataset:
        """Record a dataset file (content digest, record count, license)."""
        return catalog.add_dataset(self, Path(path), name=name, license=license, who=who)

    def set_alias(self, name: str, alias: str, version: int, *, who: str | None = None) -> None:
        """Point ``name@alias`` at ``version`` (a live version)."""
        check_alias(alias)
        if self.store.kind_of(name) != "adapter":
            raise RefNotFoundError(f"no adapter named {name!r}; see `registry ls`")
        with self.store.write() as conn:
            found = self.store.version_digest(name, version)
            if found is None or not found[1]:
                state = "has no version" if found is None else "has removed version"
                raise RefNotFoundError(f"{name} {state} {version}")
            move_alias(
                conn, name=name, alias=alias, version=version, who=self.who(who), at=now_iso()
            )

    def remove_alias(self, name: str, alias: str, *, who: str | None = None) -> None:
        """Delete ``name@alias``."""
        with self.store.write() as conn:
            old = self.store.alias_target(name, alias)
            if old is None:
                raise RefNotFoundError(f"{name} has no alias {alias!r}")
            conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            add_event(
                conn,
                at=now_iso(),
                who=self.who(who),
                action="alias.remove",
                name=name,
                version=old,
                detail={"alias": alias, "from": old},
            )

    def remove(self, ref: str, *, who: str | None = None) -> Resolved:
        """Soft-delete what ``ref`` resolves to; refused while something points at it."""
        target = self.resolve(ref)
        by, at = self.who(who), now_iso()
        with self.store.write() as conn:
            if target.kind == "adapter":
                pointing = [
                    a for a, v in self.store.aliases_of(target.name).items() if v == target.version
                ]
                if pointing:
                    raise AliasInUseError(
                        f"{target.name}@{target.version} is aliased as {', '.join(pointing)}; "
                        f"move the alias first (`registry alias set {target.name} ALIAS N` "
                        f"or `registry alias rm {target.name} ALIAS`)"
                    )
                conn.execute(
                    "UPDATE adapters SET removed_at = ?, removed_by = ? "
                    "WHERE name = ? AND version = ?",
                    (at, by, target.name, target.version),
                )
            else:
                table, column = (
                    ("bases", "base_id") if target.kind == "base" else ("datasets", "dataset_id")
                )
                users = self.store.all(
                    f"SELECT a.name, a.version FROM adapters a JOIN {table} t ON t.id = "
                    f"a.{column} WHERE t.name = ? AND a.removed_at IS NULL",
                    (target.name,),
                )
                if users:
                    listed = ", ".join(f"{u['name']}@{u['version']}" for u in users[:10])
                    raise InUseError(f"{target.kind} {target.name} is used by {listed}")
                conn.execute(
                    f"UPDATE {table} SET removed_at = ?, removed_by = ? WHERE name = ?",
                    (at, by, target.name),
                )
            add_event(
                conn,
                at=at,
                who=by,
                action="remove",
                name=target.name,
                version=target.version,
                detail={"kind": target.kind, "digest": target.digest},
            )
        return target

    def pull(self, ref: str, dest: PathLike, *, progress: bool | None = False) -> Path:
        """Materialise ``ref`` at ``dest`` (verified, atomic); see :mod:`registry.transfer`."""
        return transfer.pull(self, ref, Path(dest), progress=progress)

    def verify(
        self, ref: str | None = None, *, gc: bool = False, gc_grace_s: float = 3600.0
    ) -> VerifyReport:
        """Re-hash stored blobs (all, or those of ``ref``); optionally collect orphans."""
        return transfer.verify(self, ref, gc=gc, gc_grace_s=gc_grace_s)
