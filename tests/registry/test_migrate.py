"""`registry migrate --to DIR [--blobs s3://...]` (registry/migrate.py): the demo zoo as a
registry in use holds it (tests/support/migration.py: a removed version, aliases, rollouts,
a quarantine and an orphan), copied into a new
registry whose blobs are in S3 (a real SeaweedFS) and into a plain directory; everything
reads back the same (`ls`, `show`, `log`, aliases, rollouts, quarantine, pulled bytes)
and verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from registry.cli import main
from registry.errors import DestinationExistsError
from registry.location import open_local
from registry.s3_blobs import S3BlobStore
from tests.support.migration import cli_out, pulled, used_zoo, view


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return used_zoo(tmp_path_factory.mktemp("zoo") / "reg")


def test_migrate_the_zoo_into_s3(
    zoo: Path, seaweed_store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in seaweed_store.env().items():
        monkeypatch.setenv(name, value)
    url = seaweed_store.location()
    dest = tmp_path / "in-s3"
    out = cli_out(zoo, "migrate", "--to", str(dest), "--blobs", url)
    assert "checked" in out and ": ok" in out and "orphan" not in out, out
    assert not (dest / "blobs").exists() and not (dest / ".migrate").exists()
    assert view(dest) == view(zoo)
    for ref in ("support-v1@3", "extract", "tiny-llama"):
        assert pulled(dest, ref, tmp_path / f"new-{ref}") == pulled(
            zoo, ref, tmp_path / f"old-{ref}"
        )
    with open_local(dest, create=False) as reg:
        assert isinstance(reg.blobs, S3BlobStore)
        assert reg.verify().ok and reg.verify().orphans == ()  # the orphan stayed behind

    # And back out of S3 into a directory (blobs read from the bucket, verified).
    back = tmp_path / "back"
    assert ": ok" in cli_out(dest, "migrate", "--to", str(back))
    assert view(back) == view(zoo)
    assert pulled(back, "extract", tmp_path / "back-extract") == pulled(
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
    out = cli_out(zoo, "migrate", "--to", str(dest))
    assert ": ok" in out, out
    assert view(dest) == view(zoo)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a registry")
    result = CliRunner().invoke(main, ["--registry", str(zoo), "migrate", "--to", str(foreign)])
    assert result.exit_code == DestinationExistsError.exit_code, result.output
