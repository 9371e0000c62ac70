"""What a push decides where the files are, as a value that can cross a network.

A push has two halves. :func:`prepare_push` runs on the caller's machine: it reads the
caller's disk (the adapter directory's name, whether ``--dataset`` is a file, a schema
file, the training code's git work tree) and returns a :class:`PushPlan`: the local files
to send and a :class:`PushRequest` that says everything else in plain values. The
registry then does the rest from the request and the files it received
(:meth:`registry.local.LocalRegistry.push_request`): it re-reads and re-validates every
byte, trusting no claim of the caller's but the code lineage, which only the caller can
know. The directory registry runs both halves in one process; over HTTP the files travel
as blobs and the request as JSON (:mod:`registry.wire`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.code_lineage import code_lineage
from registry.digest import Digest
from registry.errors import AdapterProblem, InvalidAdapterError
from registry.push import DATASET_ARGUMENT_RULE, DatasetFile, dataset_argument
from registry.records import CodeLineage
from registry.refs import check_alias, check_name
from registry.validation import load_schema_file


@dataclass(frozen=True, slots=True)
class PushRequest:
    """A push in values: nothing in it names the caller's disk.

    ``dataset`` is a registered dataset's name (None: no dataset, or one sent as a file,
    see :attr:`PushPlan.dataset_file`); ``dataset_file_nearby`` is True when ``dataset``
    is also the name of a file beside the caller (only for the hint in an error).
    """

    name: str
    base: str | None
    dataset: str | None
    allow_unknown_dataset: bool
    alias: str | None
    schema: dict[str, Any] | None
    meta: dict[str, Any] | None
    code: CodeLineage | None
    dataset_file_nearby: bool = False


@dataclass(frozen=True, slots=True)
class FileRef:
    """One file of a write as sent over the wire: relative POSIX path, size, digest."""

    path: str
    size: int
    digest: Digest


@dataclass(frozen=True, slots=True)
class PushPlan:
    """The local half of a push: the request and where its files are on this machine."""

    request: PushRequest
    source: Path
    dataset_file: Path | None


def prepare_push(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    base: str | None = None,
    dataset: str | os.PathLike[str] | None = None,
    allow_unknown_dataset: bool = False,
    alias: str | None = None,
    schema: dict[str, Any] | str | os.PathLike[str] | None = None,
    meta: dict[str, Any] | None = None,
    code: str | os.PathLike[str] | None = None,
    git_sha: str | None = None,
) -> PushPlan:
    """Read the caller's disk once and decide what only it can (see the module docstring)."""
    source = Path(path)
    name = check_name(name if name is not None else source.resolve().name)
    if alias is not None:
        check_alias(alias)
    if dataset is None and not allow_unknown_dataset:
        raise InvalidAdapterError(
            AdapterProblem.DATASET_REQUIRED,
            "lineage needs the training dataset: pass --dataset NAME (registered) or "
            "--dataset ./FILE, or --allow-unknown-dataset to record it as unknown",
        )
    chosen = dataset_argument(dataset) if dataset is not None else None
    dataset_file: Path | None = None
    if isinstance(chosen, DatasetFile):
        if not chosen.path.is_file():
            raise InvalidAdapterError(
                AdapterProblem.DATASET_REQUIRED,
                f"dataset file {os.fspath(chosen.path)} does not exist or is not a file "
                f"({DATASET_ARGUMENT_RULE})",
            )
        dataset_file, chosen = chosen.path, None
    loaded = schema
    if schema is not None and not isinstance(schema, dict):
        loaded = load_schema_file(Path(schema))
    request = PushRequest(
        name=name,
        base=base,
        dataset=chosen,
        allow_unknown_dataset=allow_unknown_dataset,
        alias=alias,
        schema=loaded if isinstance(loaded, dict) else None,
        meta=meta,
        code=code_lineage(source, Path(code) if code is not None else None, git_sha),
        dataset_file_nearby=isinstance(chosen, str) and Path(chosen).is_file(),
    )
    return PushPlan(request, source, dataset_file)
