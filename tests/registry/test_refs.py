"""The reference grammar: canonical spellings only, and InvalidRefError for anything else."""

from __future__ import annotations

from typing import Any

import pytest

import registry
from registry.errors import InvalidRefError
from registry.refs import (
    MAX_VERSION,
    AliasRef,
    DigestRef,
    NameRef,
    VersionRef,
    format_ref,
    lora_name,
    parse_lora_name,
    parse_ref,
    parse_version,
    routable_refs,
)

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("support", NameRef("support")),
        ("support-v1.2_x", NameRef("support-v1.2_x")),
        ("support@3", VersionRef("support", 3)),
        ("support@10", VersionRef("support", 10)),
        (f"support@{MAX_VERSION}", VersionRef("support", MAX_VERSION)),
        ("support@production", AliasRef("support", "production")),
        ("support@canary-2", AliasRef("support", "canary-2")),
        (f"sha256:{HEX}", DigestRef(registry.Digest(f"sha256:{HEX}"))),
    ],
)
def test_parse_valid(text: str, expected: object) -> None:
    parsed = parse_ref(text)
    assert parsed == expected
    assert format_ref(parsed) == text  # one spelling per meaning


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@1",
        "support@",
        "support@0",
        "support@-1",
        "support@+1",
        "sup port",
        "sha256:abc",
        f"sha256:{HEX.upper()}",
        f" sha256:{HEX}",
        "a@b@c",
        "-lead",
        "x" * 200,
        "x" * 100_000,
        "support@1a",
        "../etc",
        # Issue 10, section 5: each was served as extract@1, or gave 500/502.
        "extract@01",
        "extract@001",
        "extract@00",
        "extract@\u0661",  # ARABIC-INDIC DIGIT ONE
        "extract@\uff11",  # FULLWIDTH DIGIT ONE
        "extract@\u00b2",  # SUPERSCRIPT TWO
        " extract ",
        "extract\n",
        "extract@1\n",
        "\textract",
        "extract@1 ",
        "  support@1 ",
        "extract@99999999999999999999999",
        f"extract@{MAX_VERSION + 1}",
        "extract@" + "9" * 5000,
        "ex\u00e9tract",
        "extract\x00",
    ],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(InvalidRefError):
        parse_ref(text)


@pytest.mark.parametrize("value", [None, 1, b"extract", ["extract"], {"a": 1}])
def test_non_strings_are_invalid_refs(value: Any) -> None:
    with pytest.raises(InvalidRefError):
        parse_ref(value)


def test_messages_say_what_to_write() -> None:
    with pytest.raises(InvalidRefError, match=r"no leading zeros \(write 1\)"):
        parse_ref("extract@01")
    with pytest.raises(InvalidRefError, match="ASCII digits"):
        parse_ref("extract@\u0661")
    with pytest.raises(InvalidRefError, match=f"1..{MAX_VERSION}"):
        parse_version("99999999999999999999999")
    with pytest.raises(InvalidRefError, match="no spaces or newlines"):
        parse_ref(" extract ")


def _version(name: str, version: int, aliases: tuple[str, ...] = ()) -> registry.AdapterVersion:
    return registry.AdapterVersion(
        name=name,
        version=version,
        digest=registry.Digest("sha256:" + f"{version:x}" * 64)
        if version < 10
        else registry.Digest("sha256:" + "f" * 64),
        base_model=registry.Lineage("base", None),
        dataset=registry.Lineage(None, None),
        peft=registry.PeftSummary(4, 8.0, ("q_proj",), 0.0),
        schema=None,
        aliases=aliases,
        meta={},
        created_by="t",
        created_at="",
    )


def test_lora_name_round_trip() -> None:
    v = _version("support-v1.2", 3)
    name = lora_name(v)
    assert name == "support-v1.2@3+" + "3" * 12
    parsed = parse_lora_name(name)
    assert parsed is not None and parsed.ref == v.ref and parsed.digest_prefix == "3" * 12
    for other in ("support@3", "support@03+" + "3" * 12, "x@1+ABCDEF123456", "base", "a+b"):
        assert parse_lora_name(other) is None


def test_routable_refs_follow_the_production_rule() -> None:
    versions = [
        _version("a", 1, ("production",)),
        _version("a", 2, ("canary",)),
        _version("b", 1),  # production moved away and removed: plain "b" is not routable
    ]
    assert routable_refs(versions) == ["a", "a@1", "a@production", "a@2", "a@canary", "b@1"]


def test_digest_type() -> None:
    d = registry.Digest.from_hex(HEX)
    assert d == f"sha256:{HEX}" and d.hex == HEX and d.short == "sha256:" + "a" * 12
    assert isinstance(d, str)
    for bad in ("sha256:" + "A" * 64, HEX, "md5:" + HEX, f"sha256:{HEX}\n"):
        with pytest.raises(InvalidRefError):
            registry.Digest(bad)
