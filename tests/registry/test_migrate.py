"""`registry migrate --to DIR [--blobs s3://...]` (registry/migrate.py): the demo zoo, with
a second version, an alias, a rollout, a quarantine and an orphan, copied into a new
registry whose blobs are in S3 (a real SeaweedFS) and into a plain directory; everything
reads back the same (`ls`, `show`, `log`, aliases, rollouts, quarantine, pulled bytes)
and verifies."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import registry
from registry.blobs import FileBlobStore
from registry.cli import main
from registry.errors import DestinationExistsError
from registry.location import open_local
from registry.s3_blobs import S3BlobStore
from tests.support.zoo import ADAPTERS, adapter_dir, fill_registry


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo zoo, plus what a registry in use holds beyond first pushes."""
    root = tmp_path_factory.mktemp("zoo") / "reg"
    fill_registry(root)
    settings = registry.RegistrySettings(user="migrator")
    with open_local(root, settings=settings, create=False) as reg:
        second = root.parent / "support-v1"
        shutil.copytree(adapter_dir("support-v2"), second)
        reg.push_adapter(second, name="support-v1", base="tiny-llama", dataset="support-v1-data")
        reg.set_alias("support-v1", "staging", 2)
        reg.start_rollout("support-v1", 2, steps=[10, 50, 100])
        reg.quarantine("triage@1", reason="answers in the wrong language")
        assert isinstance(reg.blobs, FileBlobStore)
        orphan = root.parent / "orphan.bin"
        orphan.write_bytes(b"left by a killed push")
        reg.blobs.put_file(orphan)
    return root


def _cli(location: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--registry", str(location), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _view(location: Path) -> dict[str, Any]:
    """Everything a user or a gateway reads, as the CLI and the protocol print it."""
    view: dict[str, Any] = {
        "ls": _cli(location, "ls", "--json"),
        "log": _cli(location, "log", "--json"),
        "quarantine": _cli(location, "quarantine", "ls", "--json"),
    }
    for name in ADAPTERS:
        view[f"show {name}"] = _cli(location, "show", name, "--json")
    view["show support-v1@2"] = _cli(location, "show", "support-v1@2", "--json")
    with open_local(location, create=False) as reg:
        view["aliases"] = {name: reg.aliases(name) for name in ADAPTERS}
        view["rollouts"] = repr(reg.rollouts("support-v1"))
        view["bases"] = repr(reg.list_bases())
        view["datasets"] = repr(reg.list_datasets())
    return view


def _pulled(location: Path, ref: str, dest: Path) -> dict[str, bytes]:
    with open_local(location, create=False) as reg:
        out = reg.pull(ref, dest)
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_migrate_the_zoo_into_s3(
    zoo: Path, seaweed_store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in seaweed_store.env().items():
        monkeypatch.setenv(name, value)
    url = seaweed_store.location()
    dest = tmp_path / "in-s3"
    out = _cli(zoo, "migrate", "--to", str(dest), "--blobs", url)
    assert "checked" in out and ": ok" in out and "orphan" not in out, out
    assert not (dest / "blobs").exists() and not (dest / ".migrate").exists()
    assert _view(dest) == _view(zoo)
    for ref in ("support-v1@2", "extract", "tiny-llama"):
        assert _pulled(dest, ref, tmp_path / f"new-{ref}") == _pulled(
            zoo, ref, tmp_path / f"old-{ref}"
        )
    with open_local(dest, create=False) as reg:
        assert isinstance(reg.blobs, S3BlobStore)
        assert reg.verify().ok and reg.verify().orphans == ()  # the orphan stayed behind

    # And back out of S3 into a directory (blobs read from the bucket, verified).
    back = tmp_path / "back"
    assert ": ok" in _cli(dest, "migrate", "--to", str(back))
    assert _view(back) == _view(zoo)
    assert _pulled(back, "extract", tmp_path / "back-extract") == _pulled(
        zoo, "extract", tmp_path / "zoo-extract"
    )

    # Into an existing registry: refused, nothing touched.
    result = CliRunner().invoke(main, ["--registry", str(zoo), "migrate", "--to", str(dest)])
    assert result.exit_code == DestinationExistsError.exit_code, result.output
    assert "already holds a registry" in result.output


def test_migrate_into_a_directory_and_again_after_an_interruption(
    zoo: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "copy"
    (dest / ".migrate").mkdir(parents=True)  # what a killed migration leaves
    (dest / ".migrate" / "registry.db").write_bytes(b"half a snapshot")
    out = _cli(zoo, "migrate", "--to", str(dest))
    assert ": ok" in out, out
    assert _view(dest) == _view(zoo)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a registry")
    result = CliRunner().invoke(main, ["--registry", str(zoo), "migrate", "--to", str(foreign)])
    assert result.exit_code == DestinationExistsError.exit_code, result.output
