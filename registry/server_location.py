"""A registry on servers: records in PostgreSQL, blobs in S3-compatible storage (or a
directory every registry server shares).

``registry init --store postgresql://USER@HOST:PORT/DB --blobs s3://BUCKET/PREFIX``
creates the schema and records, in the database (``registry_meta``), where the blobs
live; every later open (``registry.open("postgresql://...")``, ``registry serve --store
URL``) reads it from there, so all servers and clients of one database use one blob
store. A server started with another ``--blobs`` is refused rather than splitting the
registry's blobs between two places.

The password, if the URL carries one, never appears in a message or in
``Registry.location``; prefer ``PGPASSWORD`` or a ``~/.pgpass`` file (read by libpq).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from registry.blobs import BlobStore, FileBlobStore
from registry.deps import StepHook
from registry.errors import NotARegistryError, UnsupportedLocationError
from registry.local import LocalRegistry
from registry.settings import RegistrySettings
from registry.sql_store import SqlStore

#: The ``registry_meta`` key that holds where a database's registry keeps its blobs.
BLOBS_KEY = "blobs"
SCHEMES = ("postgresql://", "postgres://")
INIT_HINT = "`registry init --store URL --blobs s3://BUCKET/PREFIX`"


def is_store_url(text: str) -> bool:
    return text.lower().startswith(SCHEMES)


def without_password(url: str) -> str:
    """``url`` with any password left out (what a registry's ``location`` shows)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}" if user else netloc))


def blobs_location(blobs: str) -> str:
    """A ``--blobs`` value in the form it is recorded: ``s3://BUCKET/PREFIX`` as
    :class:`~registry.s3_blobs.S3Location` spells it, or an absolute directory."""
    if blobs.lower().startswith("s3://"):
        from registry.s3_blobs import S3Location

        return str(S3Location.parse(blobs))
    if "://" in blobs:
        raise UnsupportedLocationError(
            f"--blobs {blobs!r}: give s3://BUCKET/PREFIX (or a directory every registry "
            "server shares)"
        )
    if not blobs.strip():
        raise UnsupportedLocationError("--blobs is empty: give s3://BUCKET/PREFIX")
    return str(Path(blobs).expanduser().absolute())


def blob_store_at(recorded: str) -> tuple[BlobStore, Path]:
    """The blob store a recorded location names, and the directory a server keeps its
    scratch in (uploads must land on the blobs' file system, so a blob directory's own)."""
    if recorded.startswith("s3://"):
        from registry.s3_blobs import S3BlobStore  # boto3 is loaded only for S3

        scratch = hashlib.sha256(recorded.encode()).hexdigest()[:16]
        return S3BlobStore(recorded), Path(tempfile.gettempdir()) / "loraport" / scratch
    root = Path(recorded)
    return FileBlobStore(root / "blobs"), root


def check_new_blobs(recorded: str) -> None:
    """Before a blob location is recorded: a typo in the bucket or endpoint fails now."""
    if recorded.startswith("s3://"):
        from registry.s3_blobs import S3BlobStore

        S3BlobStore(recorded).check()
    else:
        Path(recorded).mkdir(parents=True, exist_ok=True)


def open_store(
    store_url: str,
    blobs: str | None = None,
    *,
    settings: RegistrySettings | None = None,
    create: bool = False,
    read_only: bool | None = None,
    on_step: StepHook | None = None,
) -> LocalRegistry:
    """Open the registry whose records are in the PostgreSQL database ``store_url``.

    ``blobs``: where its blobs are; None reads what ``registry init`` recorded, and a
    value must match it. ``create`` (``registry init``) makes the schema in an empty
    database and records ``blobs`` (required then).
    """
    try:
        from registry.sql_store.postgres import PostgresConnection  # psycopg: only here
    except ImportError:
        raise UnsupportedLocationError(
            "a postgresql:// registry needs psycopg: pip install 'loraport[postgres]'"
        ) from None

    settings = settings if settings is not None else RegistrySettings()
    wanted = blobs_location(blobs) if blobs is not None else None
    conn = PostgresConnection(store_url)
    store = SqlStore.over(conn, create=create, read_only=read_only is True, init_hint=INIT_HINT)
    try:
        recorded = conn.meta(BLOBS_KEY)
        if recorded is None:
            if wanted is None or not create:
                raise NotARegistryError(
                    f"the registry in {conn.where} records no blob store; create it with "
                    f"{INIT_HINT}"
                )
            check_new_blobs(wanted)
            with store.write():
                recorded = conn.meta(BLOBS_KEY)
                if recorded is None:
                    conn.set_meta(BLOBS_KEY, wanted)
                    recorded = wanted
        if wanted is not None and wanted != recorded:
            raise UnsupportedLocationError(
                f"the registry in {conn.where} keeps its blobs at {recorded}, not {wanted}; "
                f"start every server with --blobs {recorded} (or leave --blobs out)"
            )
        blob_store, root = blob_store_at(recorded)
    except BaseException:
        store.close()
        raise
    return LocalRegistry(
        root,
        store,
        settings,
        on_step=on_step,
        blobs=blob_store,
        location=without_password(store_url),
    )
