"""Who may call the registry service: bearer tokens, stored as hashes, each with a scope.

A tokens file is JSON: ``[{"name": "ci", "scope": "write", "sha256": "<hex>"}, ...]``,
the hex made by ``registry hash-token SECRET``; the secrets themselves are never stored
or logged. For the simple case a server given no file accepts the one token in
``REGISTRY_TOKEN``, with write scope, under the name ``token``. With no token at all the
service is open, and binds only to loopback (:func:`check_bind`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

Scope = Literal["read", "write"]


class TokenFileError(ValueError):
    """The tokens file cannot be used; the message says what to fix."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    scope: Scope
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Token:
    """A caller the service knows: recorded as ``who`` on everything it writes."""

    name: str
    scope: Scope
    sha256: str


def hash_token(secret: str) -> str:
    """The sha256 hex a tokens file stores for ``secret`` (surrounding blanks ignored)."""
    return hashlib.sha256(secret.strip().encode()).hexdigest()


def load_tokens(path: Path) -> tuple[Token, ...]:
    """The tokens in ``path``; TokenFileError names what is wrong."""
    try:
        raw = json.loads(path.read_text())
        entries = TypeAdapter(list[_Entry]).validate_python(raw)
    except OSError as exc:
        raise TokenFileError(f"cannot read tokens file {path}: {exc.strerror or exc}") from None
    except (ValueError, ValidationError) as exc:
        raise TokenFileError(
            f"tokens file {path} is not a JSON list of "
            '{"name", "scope": "read"|"write", "sha256": "<registry hash-token SECRET>"}: '
            f"{str(exc).splitlines()[0]}"
        ) from None
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise TokenFileError(f"tokens file {path} names a token twice")
    if not entries:
        raise TokenFileError(f"tokens file {path} holds no token; the service would be shut")
    return tuple(Token(e.name, e.scope, e.sha256) for e in entries)


def single_token(secret: str) -> tuple[Token, ...]:
    """``REGISTRY_TOKEN`` on the server: one token with write scope."""
    return (Token("token", "write", hash_token(secret)),)


def authenticate(header: str | None, tokens: tuple[Token, ...]) -> Token | None:
    """The token an ``Authorization: Bearer ...`` header carries, if known. Every known
    hash is compared in constant time, so timing says nothing about which came close."""
    if header is None:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    given = hash_token(secret)
    found = None
    for token in tokens:
        if hmac.compare_digest(token.sha256, given):
            found = token
    return found


def may(token: Token | None, needed: Scope) -> bool:
    """Whether ``token``'s scope covers ``needed`` (write covers read)."""
    return token is not None and (token.scope == "write" or needed == "read")


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: tuple[Token, ...]) -> None:
    """Refuse to serve an open registry beyond loopback."""
    if not tokens and not is_loopback(host):
        raise TokenFileError(
            f"refusing to serve on {host} with no tokens: anyone who can reach it could "
            "write. Give --tokens FILE (see `registry hash-token`) or set REGISTRY_TOKEN, "
            "or bind to 127.0.0.1"
        )
