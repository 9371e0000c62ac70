"""Reference grammar and the naming rules built on it: pure functions, no I/O.

``NAME``        ``NAME@production``: the first version of a name takes that alias, and
                only an alias move (never a push) changes what ``NAME`` serves; a base
                model or dataset is named by its plain ``NAME``
``NAME@N``      an immutable version number: ASCII digits, no leading zero, 1..2**31-1
``NAME@ALIAS``  a mutable pointer such as ``production``, ``canary``, ``staging``
``sha256:HEX``  a content digest (64 lower-case hex digits)

References are canonical: one spelling per meaning. Whitespace anywhere, non-ASCII
digits (Arabic-Indic, full-width, superscript), leading zeros and out-of-range numbers
are refused with :class:`InvalidRefError`, never normalised, so a cache keyed on the
text a client sent cannot grow by respelling one version. This module is also the one
home of the name a version gets inside vLLM (:func:`lora_name`) and of the refs a name
is reachable under (:func:`routable_refs`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from registry.digest import DIGEST_PREFIX, Digest
from registry.errors import InvalidRefError
from registry.records import AdapterVersion

#: The alias plain ``NAME`` means, and which the first version of a name takes.
PRODUCTION = "production"
#: Versions are 1..MAX_VERSION: far beyond use, and inside SQLite's (and C's) int.
MAX_VERSION = 2**31 - 1
#: Longer than any valid reference (128-char name, '@', 64-char alias); refused early.
MAX_REF_CHARS = 200

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_DIGITS = re.compile(r"[0-9]+")
_LORA_NAME = re.compile(r"(?P<ref>[^+]+)\+(?P<hex>[0-9a-f]{12})")


@dataclass(frozen=True, slots=True)
class NameRef:
    """``NAME``: the production alias of an adapter, or a base model / dataset."""

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

    digest: Digest


Ref = NameRef | VersionRef | AliasRef | DigestRef


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid record name, else raise InvalidRefError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRefError(
            f"invalid name {name!r}: use 1-128 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias (a letter first, never a number)."""
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidRefError(
            f"invalid alias {alias!r}: use an ASCII letter followed by letters, digits, '_' or '-'"
        )
    return alias


def check_version(version: int) -> int:
    """Return ``version`` if it is in 1..MAX_VERSION, else raise InvalidRefError."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidRefError(f"invalid version {version!r}: versions are whole numbers")
    if not 1 <= version <= MAX_VERSION:
        raise InvalidRefError(f"invalid version {version}: versions are 1..{MAX_VERSION}")
    return version


def parse_version(text: str) -> int:
    """The canonical spelling of a version number (``"7"``), as an int."""
    if not _DIGITS.fullmatch(text):
        raise InvalidRefError(
            f"invalid version {text!r}: write it with ASCII digits 0-9 only (e.g. 2)"
        )
    if text.startswith("0"):
        hint = f" (write {text.lstrip('0')})" if text.strip("0") else ""
        raise InvalidRefError(f"invalid version {text!r}: no leading zeros{hint}")
    if len(text) > len(str(MAX_VERSION)):
        raise InvalidRefError(f"invalid version {text}: versions are 1..{MAX_VERSION}")
    return check_version(int(text))


def parse_ref(text: str) -> Ref:
    """Parse a canonical reference; raise InvalidRefError (and nothing else) on failure."""
    if not isinstance(text, str):
        raise InvalidRefError(f"a reference is a string, not {type(text).__name__}")
    if len(text) > MAX_REF_CHARS:
        raise InvalidRefError(f"invalid reference: {len(text)} characters is too long")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidRefError(
            f"invalid reference {text!r}: no spaces or newlines, inside or around it"
        )
    if text.startswith(DIGEST_PREFIX):
        return DigestRef(Digest(text))
    name, sep, selector = text.partition("@")
    check_name(name)
    if not sep:
        return NameRef(name)
    if not selector:
        raise InvalidRefError(f"invalid reference {text!r}: nothing after '@'")
    if selector[:1].isdigit() or selector[:1] in "+-":
        return VersionRef(name, parse_version(selector))
    if _ALIAS.fullmatch(selector):
        return AliasRef(name, selector)
    raise InvalidRefError(
        f"invalid reference {text!r}: expected NAME, NAME@N, NAME@ALIAS or sha256:<hex>"
    )


def format_ref(ref: Ref) -> str:
    """The canonical text of a parsed reference (``parse_ref(format_ref(r)) == r``)."""
    if isinstance(ref, DigestRef):
        return str(ref.digest)
    if isinstance(ref, VersionRef):
        return f"{ref.name}@{ref.version}"
    if isinstance(ref, AliasRef):
        return f"{ref.name}@{ref.alias}"
    return ref.name


@dataclass(frozen=True, slots=True)
class LoraName:
    """The parts of a stable LoRA name: ``NAME@N+<first 12 hex digits of the digest>``."""

    name: str
    version: int
    digest_prefix: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def lora_name(adapter: AdapterVersion) -> str:
    """The name a version is loaded under inside vLLM: ``NAME@N+<12 hex>``.

    Stable for one version's content, different for any other content, readable in
    vLLM's logs. :func:`parse_lora_name` is its inverse.
    """
    return f"{adapter.ref}+{Digest(adapter.digest).hex[:12]}"


def parse_lora_name(text: str) -> LoraName | None:
    """The parts of a name :func:`lora_name` made; None for any other name."""
    match = _LORA_NAME.fullmatch(text)
    if match is None:
        return None
    try:
        ref = parse_ref(match["ref"])
    except InvalidRefError:
        return None
    if not isinstance(ref, VersionRef):
        return None
    return LoraName(ref.name, ref.version, match["hex"])


def routable_refs(versions: Iterable[AdapterVersion]) -> list[str]:
    """Every ref that reaches one of ``versions`` (live versions of any names).

    Per name, in order: ``NAME`` when a version holds the production alias, then for
    each version ``NAME@N`` and its ``NAME@ALIAS`` refs. What a gateway lists in
    ``/v1/models``.
    """
    by_name: dict[str, list[AdapterVersion]] = {}
    for version in versions:
        by_name.setdefault(version.name, []).append(version)
    out: list[str] = []
    for name, held in by_name.items():
        if any(PRODUCTION in v.aliases for v in held):
            out.append(name)
        for v in sorted(held, key=lambda v: v.version):
            out.append(v.ref)
            out.extend(f"{name}@{alias}" for alias in v.aliases)
    return out
