"""API keys: hashed in settings, each allowed a set of adapter names. Pure functions."""

from __future__ import annotations

import hashlib
import hmac

from server.errors import AuthenticationError, PermissionDeniedError
from server.settings import ApiKey


def hash_key(secret: str) -> str:
    """The sha256 hex that settings store for a key (`gateway hash-key SECRET`)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def authenticate(keys: tuple[ApiKey, ...], authorization: str | None) -> ApiKey | None:
    """The key behind an `Authorization: Bearer ...` header; None when auth is off."""
    if not keys:
        return None
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError(
            "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    digest = hash_key(secret.strip())
    found = None
    for key in keys:  # compare against every key, in constant time each
        if hmac.compare_digest(key.sha256, digest):
            found = key
    if found is None:
        raise AuthenticationError("invalid API key")
    return found


def allowed(key: ApiKey | None, name: str) -> bool:
    """May this key (None: auth is off) call the adapter or base model `name`?"""
    return key is None or "*" in key.adapters or name in key.adapters


def authorize(key: ApiKey | None, name: str) -> None:
    """Refuse a key that may not call the adapter (or base model) `name`."""
    if key is not None and not allowed(key, name):
        raise PermissionDeniedError(f"API key {key.name!r} may not use model {name!r}")
