"""Quarantine: recorded with its reason, idempotent, lifted only by a person, logged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import registry
from registry.cli import main
from registry.protocol import Registry


@pytest.fixture
def pushed(reg: Registry, make_adapter: Callable[..., Path]) -> Registry:
    reg.push_adapter(make_adapter(), name="support", dataset="support-data")
    reg.push_adapter(make_adapter(seed=2), name="support", dataset="support-data")
    return reg


def test_quarantine_is_recorded_and_lifted(pushed: Registry) -> None:
    record = pushed.quarantine("support@2", reason="  the engine\nanswered ''  ", who="gw-1")
    assert record.quarantine is not None
    assert record.quarantine.reason == "the engine answered ''"
    assert record.quarantine.who == "gw-1"
    assert pushed.adapter("support@2").quarantine == record.quarantine
    assert pushed.adapter("support@1").quarantine is None
    assert [a.ref for a in pushed.quarantined()] == ["support@2"]
    listed = {a.ref: a.quarantine for a in pushed.list_adapters("support")}
    assert listed["support@2"] == record.quarantine and listed["support@1"] is None

    lifted = pushed.lift_quarantine("support@2", who="alice")
    assert lifted.quarantine is None
    assert pushed.quarantined() == []
    actions = [(e.action, e.who, e.detail) for e in pushed.events("support")][-2:]
    assert actions == [
        ("quarantine", "gw-1", {"reason": "the engine answered ''"}),
        ("quarantine.lift", "alice", {"reason": "the engine answered ''"}),
    ]


def test_second_quarantine_keeps_the_first_reason(pushed: Registry) -> None:
    token = pushed.change_token()
    first = pushed.quarantine("support@1", reason="first", who="gw-1")
    assert pushed.change_token() > token
    token = pushed.change_token()
    again = pushed.quarantine("support", reason="second", who="gw-2")
    assert again.quarantine == first.quarantine
    assert pushed.change_token() == token  # nothing written


def test_refusals_write_nothing(pushed: Registry) -> None:
    token = pushed.change_token()
    with pytest.raises(registry.NotQuarantinedError):
        pushed.lift_quarantine("support@1")
    with pytest.raises(registry.RefNotFoundError):
        pushed.quarantine("tiny-base", reason="not an adapter")
    with pytest.raises(registry.RefNotFoundError):
        pushed.quarantine("support@9", reason="no such version")
    with pytest.raises(registry.InvalidRefError):
        pushed.quarantine("support@1", reason=" \n ")
    with pytest.raises(registry.InvalidRefError):
        pushed.quarantine("../support", reason="hostile name")
    assert pushed.change_token() == token


def test_reason_is_bounded(pushed: Registry) -> None:
    record = pushed.quarantine("support@1", reason="x" * 100_000)
    assert record.quarantine is not None and len(record.quarantine.reason) == 500


def test_cli_quarantine(pushed: Registry) -> None:
    loc = ["--registry", pushed.location]
    runner = CliRunner()
    result = runner.invoke(main, [*loc, "quarantine", "ls"])
    assert result.exit_code == 0 and "no adapter version is quarantined" in result.output
    result = runner.invoke(main, [*loc, "quarantine", "add", "support@1", "--reason", "loops"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, [*loc, "quarantine", "ls", "--json"])
    assert [r["quarantine"]["reason"] for r in json.loads(result.output)] == ["loops"]
    result = runner.invoke(main, [*loc, "show", "support@1"])
    assert "QUARANTINED: loops" in result.output
    assert "registry quarantine rm support@1" in result.output
    assert "(quarantined)" in runner.invoke(main, [*loc, "ls"]).output
    result = runner.invoke(main, [*loc, "quarantine", "rm", "support@1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, [*loc, "quarantine", "rm", "support@1"])
    assert result.exit_code == registry.NotQuarantinedError.exit_code == 34
    assert "not quarantined" in result.output
    result = runner.invoke(main, [*loc, "quarantine", "add", "support@1"])
    assert result.exit_code == 2  # --reason is required


def test_reason_is_one_plain_line(pushed: Registry) -> None:
    """Was: terminal escapes and bidi overrides were stored and printed as given (`registry
    show`/`quarantine ls` on a terminal ran them)."""
    hostile = "\x1b[2J\x1b[31mfine\x1b[0m\u202e\u200bgood\x07 \r\nreally\x00"
    record = pushed.quarantine("support@1", reason=hostile)
    assert record.quarantine is not None
    assert record.quarantine.reason == "[2J [31mfine [0m good really"
    with pytest.raises(registry.InvalidRefError):
        pushed.quarantine("support@2", reason="\x1b\u202e\x00")


def test_cli_says_when_a_version_was_already_quarantined(pushed: Registry) -> None:
    """Was: a second `quarantine add` printed `quarantined: FIRST REASON` as if its own
    reason had been taken."""
    loc = ["--registry", pushed.location]
    runner = CliRunner()
    runner.invoke(main, [*loc, "quarantine", "add", "support@1", "--reason", "loops"])
    result = runner.invoke(main, [*loc, "quarantine", "add", "support", "--reason", "other"])
    assert result.exit_code == 0, result.output
    assert "support@1 was already quarantined" in result.output
    assert "loops" in result.output and "first reason stands" in result.output
