from __future__ import annotations

import pytest

from registry.errors import InvalidRefError
from registry.refs import AliasRef, DigestRef, NameRef, VersionRef, parse_ref

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("support", NameRef("support")),
        ("support-v1.2_x", NameRef("support-v1.2_x")),
        ("support@3", VersionRef("support", 3)),
        ("support@production", AliasRef("support", "production")),
        ("support@canary-2", AliasRef("support", "canary-2")),
        (f"sha256:{HEX}", DigestRef(f"sha256:{HEX}")),
        ("  support@1 ", VersionRef("support", 1)),
    ],
)
def test_parse_valid(text: str, expected: object) -> None:
    assert parse_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@1",
        "support@",
        "support@0",
        "support@-1",
        "sup port",
        "sha256:abc",
        f"sha256:{HEX.upper()}",
        "a@b@c",
        "-lead",
        "x" * 200,
        "support@1a",
        "../etc",
    ],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(InvalidRefError):
        parse_ref(text)
