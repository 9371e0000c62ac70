"""Reference grammar, pure parsing (no I/O).

``NAME``        the alias ``production``, else the only live version (or a base/dataset)
``NAME@N``      an immutable version number
``NAME@ALIAS``  a mutable pointer such as ``production``, ``canary``, ``staging``
``sha256:HEX``  a content digest (64 lower-case hex digits)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import InvalidRefError

DIGEST_PREFIX = "sha256:"
PRODUCTION = "production"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class NameRef:
    """``NAME``: production alias, else the only live version."""

    name: str


@dataclass(frozen=True, slots=True)
class VersionRef:
    """``NAME@N``."""

    name: str
    version: int


@dataclass(frozen=True, slots=True)
class AliasRef:
    """``NAME@ALIAS``."""

    name: str
    alias: str


@dataclass(frozen=True, slots=True)
class DigestRef:
    """``sha256:HEX``."""

    digest: str


Ref = NameRef | VersionRef | AliasRef | DigestRef


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid record name, else raise InvalidRefError."""
    if not _NAME.fullmatch(name):
        raise InvalidRefError(
            f"invalid name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias (a letter first, never a number)."""
    if not _ALIAS.fullmatch(alias):
        raise InvalidRefError(
            f"invalid alias {alias!r}: use a letter followed by letters, digits, '_' or '-'"
        )
    return alias


def format_digest(hexdigest: str) -> str:
    """``abc...`` -> ``sha256:abc...``."""
    return DIGEST_PREFIX + hexdigest


def parse_ref(text: str) -> Ref:
    """Parse a reference string; raise InvalidRefError with the grammar on failure."""
    text = text.strip()
    if text.startswith(DIGEST_PREFIX):
        hexpart = text[len(DIGEST_PREFIX) :]
        if not _HEX.fullmatch(hexpart):
            raise InvalidRefError(f"invalid digest {text!r}: expected sha256:<64 lower-case hex>")
        return DigestRef(text)
    name, sep, selector = text.partition("@")
    check_name(name)
    if not sep:
        return NameRef(name)
    if selector.isdigit():
        version = int(selector)
        if version < 1:
            raise InvalidRefError(f"invalid version in {text!r}: versions start at 1")
        return VersionRef(name, version)
    if _ALIAS.fullmatch(selector):
        return AliasRef(name, selector)
    raise InvalidRefError(
        f"invalid reference {text!r}: expected NAME, NAME@N, NAME@ALIAS or sha256:<hex>"
    )
