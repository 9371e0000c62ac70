"""`registry migrate --to postgresql://... --blobs s3://...` (registry/migrate.py,
registry/migrate_records.py) on a real PostgreSQL and a real SeaweedFS: the demo zoo with
a removed version, aliases, a rollout history with an analysis and a held lease, an active
rollout, a quarantine and an orphan reads exactly the same after the copy (listing, each
ref's resolve, show, the event log, rollouts, the change token) and verifies; the next
version number, event id and rollout id follow the old ones; the CLI form end to end and a
`registry serve --store` over the result; refusals; and a migration killed after its
blobs, before its records commit, leaves an empty database and runs again to success."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import registry
from registry.cli import main
from registry.errors import (
    DestinationExistsError,
    NotARegistryError,
    UnsupportedLocationError,
)
from registry.http_client import HttpRegistry
from registry.location import open_local
from registry.migrate import migrate_to_store
from registry.s3_blobs import S3BlobStore
from registry.server_location import open_store
from tests.support.migration import SETTINGS, pulled, used_zoo, view
from tests.support.postgres import Postgres
from tests.support.registry_service import registry_service
from tests.support.zoo import adapter_dir

REGISTRY = str(Path(sys.executable).with_name("registry"))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return used_zoo(tmp_path_factory.mktemp("zoo") / "reg")


@pytest.fixture
def s3_env(seaweed_store: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in seaweed_store.env().items():
        monkeypatch.setenv(name, value)
    return seaweed_store


def test_the_zoo_reads_the_same_in_postgresql_and_s3(
    zoo: Path, postgres_server: Postgres, s3_env: Any, tmp_path: Path
) -> None:
    url, blobs = postgres_server.new_database(), s3_env.location()
    steps: list[tuple[int, int]] = []
    with open_local(zoo, settings=SETTINGS, create=False) as source:
        report = migrate_to_store(
            source, url, blobs=blobs, settings=SETTINGS, on_blob=lambda d, t: steps.append((d, t))
        )
        needed = source.verify().checked
    assert report.verify.ok and report.verify.errors == ()
    assert report.copied == len(steps) == needed and report.present == 0
    assert steps[-1] == (needed, needed)
    assert view(url) == view(zoo)
    for ref in ("support-v1@3", "extract", "tiny-llama"):
        assert pulled(url, ref, tmp_path / f"new-{ref}") == pulled(
            zoo, ref, tmp_path / f"old-{ref}"
        )

    with open_store(url, settings=SETTINGS) as moved:
        assert isinstance(moved.blobs, S3BlobStore)
        assert moved.verify().ok and moved.verify().orphans == ()  # the orphan stayed behind
        active = moved.rollout("support-v1")
        assert active is not None and active.holder == "controller-b"
        # Ids go on from the old ones: a version number past the removed one, the next
        # event id, the next rollout id.
        last_event = moved.change_token()
        last_rollout = max(r.id for r in moved.rollouts("support-v1"))
        moved.end_rollout("support-v1", None, "aborted", reason="moved", holder="controller-b")
        again = moved.start_rollout("support-v1", 3, steps=[50, 100])
        assert again.id == last_rollout + 1
        copy = tmp_path / "support-v1-4"
        shutil.copytree(adapter_dir("triage"), copy)
        pushed = moved.push_adapter(
            copy, name="support-v1", base="tiny-llama", dataset="support-v1-data"
        )
        assert pushed.adapter.version == 4
        assert [e.id for e in moved.events()][-3:] == [
            last_event + 1,
            last_event + 2,
            last_event + 3,
        ]

    # Into a database that now holds a registry: refused, nothing touched.
    before = view(url)
    with (
        open_local(zoo, settings=SETTINGS, create=False) as source,
        pytest.raises(DestinationExistsError, match="already holds a registry"),
    ):
        migrate_to_store(source, url, blobs=blobs, settings=SETTINGS)
    assert view(url) == before


def test_the_cli_form_end_to_end_then_served(
    zoo: Path, postgres_server: Postgres, s3_env: Any, tmp_path: Path
) -> None:
    url, blobs = postgres_server.new_database(), s3_env.location()
    done = subprocess.run(
        [REGISTRY, "--registry", str(zoo), "migrate", "--to", url, "--blobs", blobs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every record to postgresql://" in done.stdout and ": ok" in done.stdout, done.stdout
    verified = subprocess.run(
        [REGISTRY, "--registry", url, "verify"], capture_output=True, text=True, timeout=300
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr

    with (
        registry_service(url, tmp_path / "serve.log") as served,
        HttpRegistry(served.url, SETTINGS) as client,
    ):
        with registry.open(zoo, create=False) as old:
            assert repr(client.list_adapters()) == repr(old.list_adapters())
        assert client.resolve("support-v1@staging").version == 3
        out = client.pull("support-v1@staging", tmp_path / "pulled")
        assert (out / "adapter_model.safetensors").read_bytes() == (
            adapter_dir("extract") / "adapter_model.safetensors"
        ).read_bytes()

    again = CliRunner().invoke(
        main, ["--registry", str(zoo), "migrate", "--to", url, "--blobs", blobs]
    )
    assert again.exit_code == DestinationExistsError.exit_code, again.output
    assert "already holds a registry" in again.output


def test_refusals(zoo: Path, postgres_server: Postgres, s3_env: Any, tmp_path: Path) -> None:
    url = postgres_server.new_database()

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, ["--registry", str(zoo), "migrate", *args])

    no_blobs = run("--to", url)
    assert no_blobs.exit_code == UnsupportedLocationError.exit_code, no_blobs.output
    assert "--blobs s3://BUCKET/PREFIX" in no_blobs.output

    from_pg = CliRunner().invoke(main, ["--registry", url, "migrate", "--to", str(tmp_path / "x")])
    assert from_pg.exit_code == UnsupportedLocationError.exit_code, from_pg.output
    assert "pg_dump" in from_pg.output

    # A database of something else.
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    foreign = run("--to", url, "--blobs", s3_env.location())
    assert foreign.exit_code == NotARegistryError.exit_code, foreign.output
    assert "invoices" in foreign.output

    # An empty registry fresh from `registry init --store`: the migration fills it, but
    # only with the blobs it was created with.
    fresh, blobs = postgres_server.new_database(), s3_env.location()
    open_store(fresh, blobs, settings=SETTINGS, create=True).close()
    other = run("--to", fresh, "--blobs", s3_env.location())
    assert other.exit_code == UnsupportedLocationError.exit_code, other.output
    assert f"--blobs {blobs}" in other.output
    assert run("--to", fresh, "--blobs", blobs).exit_code == 0


def test_killed_before_the_records_commit_leaves_an_empty_database_and_runs_again(
    zoo: Path, postgres_server: Postgres, s3_env: Any
) -> None:
    url, blobs = postgres_server.new_database(), s3_env.location()

    class Killed(Exception):
        pass

    def die_before_commit(step: str) -> None:
        if step == "records-loaded":
            raise Killed(step)

    with open_local(zoo, settings=SETTINGS, create=False) as source:
        with pytest.raises(Killed):
            migrate_to_store(source, url, blobs=blobs, settings=SETTINGS, on_step=die_before_commit)
        with pytest.raises(NotARegistryError, match="holds no registry"):
            open_store(url, settings=SETTINGS).close()
        import psycopg

        with psycopg.connect(url) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
        assert tables == []  # not even the schema: it was made in the same transaction

        report = migrate_to_store(source, url, blobs=blobs, settings=SETTINGS)
        assert report.copied == 0 and report.present == source.verify().checked  # resumed
        assert report.verify.ok
    assert view(url) == view(zoo)
