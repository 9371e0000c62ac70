"""From a registry location (argument, ``REGISTRY_URL`` or default) to a :class:`Registry`.

The location's scheme picks the implementation from one table (:data:`OPENERS`), as
MLflow picks its store: a directory path (or ``file:``) gives :class:`LocalRegistry`;
``http(s)://`` gives :class:`HttpRegistry`, the client of a ``registry serve``;
``postgresql://`` gives a :class:`LocalRegistry` over that database and the blob store
``registry init`` recorded in it (:mod:`registry.server_location`). Only
``create=True`` makes a new registry, and only in a missing or empty directory: a typo
in ``--registry`` or a directory of something else is an error that says so, never a
fresh empty registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from registry.blob_location import BLOBS_FILE, open_blobs
from registry.deps import StepHook
from registry.errors import NotARegistryError, UnsupportedLocationError
from registry.local import LocalRegistry
from registry.protocol import Registry
from registry.server_location import is_store_url, open_store
from registry.settings import RegistrySettings
from registry.sql_store import SqlStore

DB_NAME = "registry.db"


def location_path(location: str | os.PathLike[str] | None, settings: RegistrySettings) -> Path:
    """The directory a location names; raise UnsupportedLocationError for URLs.

    No location (None, and an empty ``REGISTRY_URL``, which settings read as unset) is
    the per-user default; an empty or blank location *given* (``--registry ""``) is an
    error, since it is almost always an unset shell variable.
    """
    text = os.fspath(location) if location is not None else settings.url
    if text is None:
        return settings.default_location()
    if not text.strip() or text != text.strip():
        if location is None:
            raise UnsupportedLocationError(
                f"REGISTRY_URL={text!r} is blank or has spaces around it: set it to a "
                "directory, or unset it (or set it empty) for the per-user default"
            )
        raise UnsupportedLocationError(
            f"registry location {text!r} is empty or has spaces around it: give a directory "
            "(`--registry DIR`), or leave out --registry for $REGISTRY_URL / the per-user default"
        )
    if scheme(text) == "http":
        raise UnsupportedLocationError(f"{text} is a registry service, not a directory")
    if scheme(text) == "postgresql":
        raise UnsupportedLocationError(f"{text} is a database, not a registry directory")
    return Path(text.removeprefix("file:")).expanduser()


def scheme(text: str) -> str:
    """``http`` for a registry service's URL, ``postgresql`` for a database's,
    ``directory`` for a path; raise UnsupportedLocationError for any other ``scheme://``."""
    lowered = text.lower()
    if is_store_url(text):
        return "postgresql"
    if lowered.startswith(("http://", "https://")):
        rest = text.split("://", 1)[1]
        if not rest or rest.startswith("/"):
            raise UnsupportedLocationError(f"registry URL {text!r} names no host")
        return "http"
    if "://" in text:
        raise UnsupportedLocationError(
            f"unsupported registry location {text!r}: use a directory path, the "
            "http(s):// URL of a `registry serve`, or a postgresql:// database"
        )
    return "directory"


def _check_directory(path: Path, *, create: bool) -> None:
    """Refuse what is not (and may not become) a registry directory."""
    if path.exists() and not path.is_dir():
        raise NotARegistryError(f"{path} is a file, not a registry directory")
    if (path / DB_NAME).exists():
        return
    if not create:
        if path.is_dir():
            raise NotARegistryError(
                f"{path} holds no registry ({DB_NAME} is missing); check --registry / "
                f"REGISTRY_URL, or create one with `registry init --registry {path}`"
            )
        raise NotARegistryError(
            f"no registry at {path} (no such directory); check --registry / REGISTRY_URL "
            f"for a typo, or create one with `registry init --registry {path}`"
        )
    if path.is_dir() and any(p.name != BLOBS_FILE for p in path.iterdir()):
        raise NotARegistryError(
            f"{path} is a non-empty directory without a registry; a registry is created "
            "only in a new or empty directory, so pick another path"
        )


def open_registry(
    location: str | os.PathLike[str] | None = None,
    *,
    settings: RegistrySettings | None = None,
    create: bool = True,
    read_only: bool | None = None,
) -> Registry:
    """Open the registry at ``location`` (default ``REGISTRY_URL``, then the per-user dir).

    ``create``: make a new registry if the location is missing or an empty directory
    (the library's default; every ``registry`` verb but ``init`` passes False, and so
    should a gateway). ``read_only``: None opens read-only exactly when this process
    cannot write the registry; True never writes.
    """
    settings = settings if settings is not None else RegistrySettings()
    text = os.fspath(location) if location is not None else settings.url
    kind = scheme(text.strip()) if text is not None and text.strip() == text and text else None
    opener = OPENERS[kind or "directory"]
    return opener(location, settings, create, read_only)


def _open_directory(
    location: str | os.PathLike[str] | None,
    settings: RegistrySettings,
    create: bool,
    read_only: bool | None,
) -> Registry:
    return open_local(location, settings=settings, create=create, read_only=read_only)


def _open_http(
    location: str | os.PathLike[str] | None,
    settings: RegistrySettings,
    create: bool,
    read_only: bool | None,
) -> Registry:
    from registry.http_client import HttpRegistry  # httpx is loaded only for a URL

    url = os.fspath(location) if location is not None else settings.url
    assert url is not None
    return HttpRegistry(url, settings)


def _open_postgresql(
    location: str | os.PathLike[str] | None,
    settings: RegistrySettings,
    create: bool,
    read_only: bool | None,
) -> Registry:
    url = os.fspath(location) if location is not None else settings.url
    assert url is not None
    return open_store(url, settings=settings, create=create, read_only=read_only)


#: A location's scheme -> how to open it (the one place a new kind of registry plugs in).
OPENERS: dict[
    str, Callable[[str | os.PathLike[str] | None, RegistrySettings, bool, bool | None], Registry]
] = {
    "directory": _open_directory,
    "http": _open_http,
    "postgresql": _open_postgresql,
}


def open_local(
    location: str | os.PathLike[str] | None = None,
    *,
    settings: RegistrySettings | None = None,
    create: bool = True,
    read_only: bool | None = None,
    on_step: StepHook | None = None,
) -> LocalRegistry:
    """:func:`open_registry` for a directory, typed as the local implementation.

    ``on_step`` observes each step a write reaches (see :data:`registry.push.PUSH_STEPS`):
    the crash tests kill the process there. Only this internal opener takes it; the
    public :func:`registry.open` does not.
    """
    settings = settings if settings is not None else RegistrySettings()
    path = location_path(location, settings)
    _check_directory(path, create=create and read_only is not True)
    if not path.exists():
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise NotARegistryError(
                f"cannot create a registry at {path}: {exc.strerror or exc}"
            ) from None
    store = SqlStore.open(
        path / DB_NAME, busy_timeout_s=settings.busy_timeout_s, create=create, read_only=read_only
    )
    return LocalRegistry(path, store, settings, on_step=on_step, blobs=open_blobs(path))
