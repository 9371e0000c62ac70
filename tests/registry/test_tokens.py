"""registry.service.tokens: who may call, as pure functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.service.tokens import (
    Token,
    TokenFileError,
    authenticate,
    check_bind,
    hash_token,
    is_loopback,
    load_tokens,
    may,
    single_token,
)

READER = Token("reader", "read", hash_token("r-secret"))
WRITER = Token("writer", "write", hash_token("w-secret"))
BOTH = (READER, WRITER)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer r-secret", READER),
        ("bearer w-secret", WRITER),
        ("Bearer  w-secret ", WRITER),  # blanks around the secret do not matter
        ("Bearer nope", None),
        ("Basic w-secret", None),
        ("Bearer ", None),
        ("w-secret", None),
        (None, None),
    ],
)
def test_authenticate(header: str | None, expected: Token | None) -> None:
    assert authenticate(header, BOTH) == expected


@pytest.mark.parametrize(
    ("token", "needed", "allowed"),
    [
        (READER, "read", True),
        (READER, "write", False),
        (WRITER, "read", True),
        (WRITER, "write", True),
        (None, "read", False),
    ],
)
def test_scopes(token: Token | None, needed: str, allowed: bool) -> None:
    assert may(token, needed) is allowed  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.9.9.9", True),
     ("0.0.0.0", False), ("10.0.0.5", False), ("reg.internal", False), ("::", False)],
)  # fmt: skip
def test_an_open_service_binds_loopback_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        check_bind(host, ())
    else:
        with pytest.raises(TokenFileError, match="no tokens"):
            check_bind(host, ())
    check_bind(host, single_token("s"))  # with a token, anywhere


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([{"name": "ci", "scope": "write", "sha256": hash_token("x")}]))
    assert load_tokens(path) == (Token("ci", "write", hash_token("x")),)
    for bad, why in [
        ("not json", "not a JSON list"),
        ("[]", "holds no token"),
        ('[{"name": "a", "scope": "admin", "sha256": "' + "0" * 64 + '"}]', "not a JSON list"),
        ('[{"name": "a", "scope": "read", "sha256": "plaintext"}]', "not a JSON list"),
        ('[{"name": "../x", "scope": "read", "sha256": "' + "0" * 64 + '"}]', "not a JSON list"),
        (json.dumps([{"name": "a", "scope": "read", "sha256": "0" * 64}] * 2), "twice"),
    ]:
        path.write_text(bad)
        with pytest.raises(TokenFileError, match=why):
            load_tokens(path)
    with pytest.raises(TokenFileError, match="cannot read"):
        load_tokens(tmp_path / "missing.json")
