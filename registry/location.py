"""Turning a registry location (argument, ``REGISTRY_URL`` or default) into a Registry."""

from __future__ import annotations

import os
from pathlib import Path

from registry.errors import UnsupportedLocationError
from registry.local import Registry
from registry.settings import RegistrySettings


def location_path(location: str | os.PathLike[str] | None, settings: RegistrySettings) -> Path:
    """The directory a location names; raise UnsupportedLocationError for URLs."""
    text = os.fspath(location) if location is not None else settings.url
    if text is None or text == "":
        return settings.default_location()
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        raise UnsupportedLocationError(
            f"remote registries ({text}) are not yet supported: `registry serve` comes in a "
            "later release; use a directory for now"
        )
    if "://" in text:
        raise UnsupportedLocationError(
            f"unsupported registry location {text!r}: use a directory path"
        )
    return Path(text.removeprefix("file:")).expanduser()


def open_registry(
    location: str | os.PathLike[str] | None = None, *, settings: RegistrySettings | None = None
) -> Registry:
    """Open (creating and migrating if needed) the registry at ``location``.

    ``location`` defaults to ``settings.url`` (``REGISTRY_URL``), then to the per-user
    data directory.
    """
    settings = settings if settings is not None else RegistrySettings()
    path = location_path(location, settings)
    if path.exists() and not path.is_dir():
        raise UnsupportedLocationError(f"{path} is a file, not a registry directory")
    return Registry(path, settings)
