"""API keys: authentication and per-adapter authorization (pure functions)."""

import pytest

from server.auth import authenticate, authorize, hash_key
from server.errors import AuthenticationError, PermissionDeniedError
from server.settings import ApiKey

KEYS = (
    ApiKey(name="team-a", sha256=hash_key("sk-a"), adapters=("extract",)),
    ApiKey(name="ops", sha256=hash_key("sk-ops")),
)


def test_no_keys_configured_means_open():
    assert authenticate((), None) is None
    authorize(None, "anything")


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Basic sk-a", "sk-a", "Bearer nope"])
def test_missing_or_wrong_key_is_401(header):
    with pytest.raises(AuthenticationError) as e:
        authenticate(KEYS, header)
    assert e.value.status == 401


def test_key_found_and_scoped():
    key = authenticate(KEYS, "Bearer sk-a")
    assert key is not None and key.name == "team-a"
    authorize(key, "extract")
    with pytest.raises(PermissionDeniedError) as e:
        authorize(key, "support-v1")
    assert e.value.status == 403


def test_wildcard_key_allows_everything():
    authorize(authenticate(KEYS, "bearer sk-ops"), "support-v1")


def test_settings_refuse_a_plaintext_key():
    with pytest.raises(ValueError):
        ApiKey(name="x", sha256="sk-plaintext")
