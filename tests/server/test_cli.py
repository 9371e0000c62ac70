"""`gateway` CLI: help that teaches, and clear refusals before any server starts."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import registry
from server.auth import hash_key
from server.cli import cli


def test_every_command_has_help_with_an_example() -> None:
    for name in cli.commands:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output, name


def test_serve_refuses_a_registry_without_a_base(tmp_path: Path) -> None:
    registry.open(tmp_path / "reg").close()
    result = CliRunner().invoke(cli, ["serve", "--registry", str(tmp_path / "reg")])
    assert result.exit_code != 0
    assert "base add" in result.output


def test_serve_warns_about_a_misspelt_setting(tmp_path: Path) -> None:
    registry.open(tmp_path / "reg").close()
    result = CliRunner().invoke(
        cli,
        ["serve", "--registry", str(tmp_path / "reg")],
        env={"GATEWAY_MAX_INFLIGHT": "4"},
    )
    assert "warning: GATEWAY_MAX_INFLIGHT is not a gateway setting" in result.output
    assert "did you mean GATEWAY_MAX_IN_FLIGHT?" in result.output


def test_serve_refuses_an_unknown_base(tmp_path: Path) -> None:
    registry.open(tmp_path / "reg").close()
    result = CliRunner().invoke(
        cli, ["serve", "--registry", str(tmp_path / "reg"), "--base", "nope"]
    )
    assert result.exit_code != 0
    assert "nope" in result.output


def test_hash_key() -> None:
    result = CliRunner().invoke(cli, ["hash-key", "sk-a"])
    assert result.output.strip() == hash_key("sk-a")


def test_serve_names_each_bad_setting_without_a_traceback(tmp_path: Path) -> None:
    registry.open(tmp_path / "reg").close()
    result = CliRunner().invoke(
        cli,
        ["serve", "--registry", str(tmp_path / "reg")],
        env={"GATEWAY_CPU_AFFINITY": "x", "GATEWAY_MAX_IN_FLIGHT": "lots"},
    )
    assert result.exit_code == 1
    assert "GATEWAY_CPU_AFFINITY: Value error, not a CPU list" in result.output
    assert "GATEWAY_MAX_IN_FLIGHT: Input should be a valid integer" in result.output
    assert "Traceback" not in result.output


def test_serve_on_a_missing_registry_exits_with_the_registrys_code(tmp_path: Path) -> None:
    """A typo in --registry must not create an empty registry the gateway then serves."""
    result = CliRunner().invoke(cli, ["serve", "--registry", str(tmp_path / "typo")])
    assert result.exit_code == registry.errors.NotARegistryError.exit_code
    assert "no registry at" in result.output
    assert not (tmp_path / "typo").exists()


def test_an_empty_registry_flag_is_a_usage_error_and_an_empty_variable_is_unset(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(cli, ["serve", "--registry", ""])
    assert result.exit_code == 2 and "--registry" in result.output and "empty" in result.output
    env = {"REGISTRY_URL": "", "GATEWAY_REGISTRY": "", "XDG_DATA_HOME": str(tmp_path / "d")}
    result = CliRunner().invoke(cli, ["serve"], env=env)
    assert result.exit_code == registry.errors.NotARegistryError.exit_code
    assert str(tmp_path / "d" / "loraport" / "registry") in result.output
