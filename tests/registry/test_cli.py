"""The registry CLI end to end (click's runner, a real registry directory)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from registry.cli import main
from registry.errors import (
    AliasInUseError,
    IntegrityError,
    InvalidAdapterError,
    InvalidRefError,
    NotARegistryError,
    UnsupportedLocationError,
)
from registry.location import open_local
from registry.settings import RegistrySettings
from tests.support.mounted_service import MountedServer


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
    return found


@pytest.mark.parametrize("path", [name for name, _ in _commands(main)])
def test_every_command_has_help_with_example(path: str) -> None:
    result = CliRunner().invoke(main, [*path.split(), "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output, f"`registry {path}` has no Example: in its help"


def test_every_leaf_command_takes_registry() -> None:
    for path, command in _commands(main):
        if path.endswith("hash-token"):  # hashes its argument; touches no registry
            continue
        if not isinstance(command, click.Group):
            assert any("--registry" in p.opts for p in command.params), path


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reg_kind: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., tuple[int, str]]]:
    """``registry ARGS`` with REGISTRY_URL the directory ``tmp_path/reg``, or a registry
    service over it (``init`` then runs where the service does, on the directory)."""
    directory = tmp_path / "reg"
    monkeypatch.setenv("REGISTRY_USER", "cli-user")
    with contextlib.ExitStack() as stack:
        location = str(directory)
        if reg_kind == "http":
            local = stack.enter_context(open_local(directory, settings=RegistrySettings()))
            service: MountedServer = request.getfixturevalue("service")
            location = stack.enter_context(service.serve(local, RegistrySettings()))
        monkeypatch.setenv("REGISTRY_URL", location)

        def run(*args: str) -> tuple[int, str]:
            where = ["--registry", str(directory)] if args == ("init",) else []
            result = CliRunner().invoke(main, [*args, *where])
            return result.exit_code, result.output

        yield run


@pytest.fixture
def dir_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str]]:
    """``registry ARGS`` on directories only (what a path location alone can get wrong)."""
    monkeypatch.setenv("REGISTRY_URL", str(tmp_path / "reg"))
    monkeypatch.setenv("REGISTRY_USER", "cli-user")

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, list(args))
        return result.exit_code, result.output

    return run


def test_workflow(
    cli: Callable[..., tuple[int, str]],
    base_dir: Path,
    dataset_file: Path,
    make_adapter: Callable[..., Path],
    tmp_path: Path,
) -> None:
    assert cli("init")[0] == 0
    code, out = cli("base", "add", str(base_dir), "--name", "tiny-base", "--license", "mit")
    assert code == 0 and out.startswith("tiny-base sha256:")
    code, out = cli("dataset", "add", str(dataset_file), "--name", "support-data")
    assert code == 0 and "2 records" in out
    adapter = make_adapter("support")
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object"}')
    args = (
        "push",
        str(adapter),
        "--dataset",
        "support-data",
        "--meta",
        "epochs=3",
        "--schema",
        str(schema),
    )
    code, out = cli(*args)
    assert code == 0 and out.startswith("support@1 sha256:") and "already" not in out
    code, out = cli(*args)
    assert code == 0 and "support@1" in out and "(already existed)" in out
    code, out = cli("push", str(make_adapter("support", seed=1)), "--allow-unknown-dataset")
    assert code == 0 and out.startswith("support@2 ")
    assert cli("alias", "set", "support", "production", "1")[0] == 0  # already there: no-op
    code, out = cli("alias", "set", "support", "production", "01")
    assert code == InvalidRefError.exit_code and "leading zeros" in out

    code, out = cli("show", "support", "--json")
    shown = json.loads(out)
    assert {
        "name",
        "version",
        "digest",
        "base_model",
        "dataset",
        "peft",
        "aliases",
        "schema",
        "meta",
        "created_by",
        "created_at",
        "kind",
    } <= set(shown)
    assert shown["version"] == 1 and shown["aliases"] == ["production"]
    assert shown["base_model"]["name"] == "tiny-base" and shown["dataset"]["name"] == "support-data"
    assert shown["peft"] == {
        "r": 4,
        "lora_alpha": 8.0,
        "target_modules": ["q_proj", "v_proj"],
        "lora_dropout": 0.05,
    }
    assert shown["meta"] == {"epochs": "3"} and shown["schema"] == {"type": "object"}
    assert shown["created_by"] == "cli-user" and shown["kind"] == "adapter"
    for ref in ("tiny-base", "support-data", "support@2"):
        code, out = cli("show", ref)
        assert code == 0 and ref.split("@")[0] in out
    assert json.loads(cli("show", "tiny-base", "--json")[1])["license"] == "mit"

    code, out = cli("ls", "--json")
    assert [(r["kind"], r["name"]) for r in json.loads(out)] == [
        ("base", "tiny-base"),
        ("dataset", "support-data"),
        ("adapter", "support"),
        ("adapter", "support"),
    ]
    code, out = cli("ls")
    assert code == 0 and "production" in out

    code, out = cli("pull", "support@production", str(tmp_path / "pulled"))
    assert code == 0 and (tmp_path / "pulled" / "adapter_model.safetensors").exists()
    code, out = cli("verify")
    assert code == 0 and "ok" in out
    assert cli("rm", "support@1")[0] == AliasInUseError.exit_code
    code, out = cli("rm", "support@2")
    assert code == 0 and "removed adapter support@2" in out
    code, out = cli("log", "support")
    actions = [line.split()[3] for line in out.splitlines()]
    assert actions == ["push", "alias.set", "push", "remove"]  # v1 took production itself
    code, out = cli("log", "--json")
    assert json.loads(out.splitlines()[0])["action"] == "base.add"


def test_errors_have_mapped_exit_codes(
    cli: Callable[..., tuple[int, str]], tmp_path: Path, make_adapter: Callable[..., Path]
) -> None:
    assert cli("init")[0] == 0
    code, out = cli("push", str(make_adapter()), "--allow-unknown-dataset")
    assert code == InvalidAdapterError.exit_code and "registry base add" in out
    code, out = cli("show", "nothing")
    assert code == 3 and "Error:" in out
    code, out = cli("show", "bad ref!")
    assert code == 4
    code, out = cli("ls", "--registry", "http://127.0.0.1:9")  # nothing listens on port 9
    assert code == 37 and "is `registry serve` running there?" in out
    code, out = cli("ls", "--registry", "ftp://registry.internal")
    assert code == 15 and "unsupported registry location" in out
    code, out = cli("push", str(make_adapter()), "--meta", "novalue")
    assert code == 2


def test_verify_exit_code_on_damage(
    cli: Callable[..., tuple[int, str]], base_dir: Path, tmp_path: Path
) -> None:
    cli("init")
    cli("base", "add", str(base_dir), "--name", "tiny-base")
    blobs = sorted((tmp_path / "reg" / "blobs" / "sha256").rglob("*"))
    victim = next(p for p in blobs if p.is_file())
    victim.chmod(0o644)
    victim.write_bytes(b"changed")
    code, out = cli("verify")
    assert code == IntegrityError.exit_code and "ERROR" in out


def test_only_init_creates_a_registry(
    dir_cli: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    """Rough edge: `--registry /path/with/a/typo ls` made a new empty registry."""
    cli = dir_cli
    typo = tmp_path / "regsitry"
    for verb in (("ls",), ("show", "x"), ("log",), ("verify",), ("pull", "x", str(tmp_path / "d"))):
        code, out = cli(*verb, "--registry", str(typo))
        assert code == NotARegistryError.exit_code, (verb, out)
        assert "registry init" in out and "Traceback" not in out
    assert not typo.exists()
    elsewhere = tmp_path / "project"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("mine")
    code, out = cli("ls", "--registry", str(elsewhere))
    assert code == NotARegistryError.exit_code and "no registry" in out
    code, out = cli("init", "--registry", str(elsewhere))
    assert code == NotARegistryError.exit_code and "non-empty" in out
    assert sorted(p.name for p in elsewhere.iterdir()) == ["notes.txt"]
    assert cli("init", "--registry", str(tmp_path / "new"))[0] == 0
    assert cli("ls", "--registry", str(tmp_path / "new"))[0] == 0


def test_garbage_database_is_a_clear_error(
    dir_cli: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    """Rough edge: a garbage registry.db gave a traceback."""
    cli = dir_cli
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "registry.db").write_bytes(b"this is not a database at all" * 100)
    for verb in (("ls",), ("init",)):
        code, out = cli(*verb, "--registry", str(broken))
        assert code == NotARegistryError.exit_code, out
        assert "not a SQLite database" in out and "Traceback" not in out


def test_push_records_code_commit_and_shows_it(
    cli: Callable[..., tuple[int, str]],
    base_dir: Path,
    dataset_file: Path,
    make_adapter: Callable[..., Path],
) -> None:
    assert cli("init")[0] == 0
    cli("base", "add", str(base_dir), "--name", "tiny-base")
    sha = "ab" * 20
    code, out = cli(
        "push", str(make_adapter()), "--dataset", str(dataset_file), "--git-sha", sha.upper()
    )
    assert code == 0, out
    assert f"code:        {sha} (given)" in cli("show", "support")[1]
    assert f"code={sha}" in cli("log", "support")[1]
    code, out = cli(
        "push", str(make_adapter(seed=3)), "--allow-unknown-dataset", "--git-sha", "abc"
    )
    assert code == InvalidAdapterError.exit_code and "full commit id" in out


def test_an_empty_registry_flag_is_refused_and_an_empty_variable_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_URL", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["ls", "--registry", ""])
    assert result.exit_code == UnsupportedLocationError.exit_code
    assert "empty" in result.output and "leave out --registry" in result.output
    result = CliRunner().invoke(main, ["ls"])  # REGISTRY_URL= is unset: the per-user default
    assert result.exit_code == NotARegistryError.exit_code
    assert str(tmp_path / "data" / "loraport" / "registry") in result.output


def test_push_help_says_how_a_dataset_file_is_written() -> None:
    result = CliRunner().invoke(main, ["push", "--help"])
    assert "a bare name is never taken for a file" in " ".join(result.output.split())


def test_the_group_location_reaches_nested_verbs(tmp_path: Path) -> None:
    """One opener (registry.commands.options.open_for_command): `--registry` before a nested group's
    verb names the registry, as `deploy --registry X status` does."""
    runner = CliRunner()
    location = str(tmp_path / "grouped")
    assert runner.invoke(main, ["init", "--registry", location]).exit_code == 0
    result = runner.invoke(main, ["--registry", location, "quarantine", "ls"])
    assert result.exit_code == 0, result.output
    missing = runner.invoke(main, ["--registry", str(tmp_path / "typo"), "quarantine", "ls"])
    assert missing.exit_code == NotARegistryError.exit_code
    assert "typo" in missing.output
