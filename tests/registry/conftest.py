"""Synthetic base models and PEFT adapters, small enough to build in milliseconds, and
the registry under test: ``reg`` runs each test twice, on a directory and through a real
registry service app over HTTP (one session server, one fresh mount per test), so the
HTTP form cannot drift from the directory. ``local_reg`` is for what only a directory
has (crash hooks, SQLite internals, blob files).

The records on PostgreSQL: a module that sets ``records`` to ``RECORDS`` (the contract
files do) runs each test on SQLite and on a real PostgreSQL (one cluster per session, a
fresh database per test), ``local_reg`` then being PostgreSQL records with blobs in a
directory (what the HTTP form can serve). ``reg`` also runs every protocol test on
``servers``: two registry services over one PostgreSQL database and one SeaweedFS (S3)
prefix, each with its own open store, behind a balancer that alternates requests between
them, so nothing a test sees can live in one server's memory. A module whose ``reg_kind``
takes ``postgresql`` runs ``reg`` on PostgreSQL records with blobs in SeaweedFS, directly.

Four forms in all: a directory; HTTP over a directory; HTTP over PostgreSQL + S3 with two
servers; PostgreSQL + S3 opened directly (test_store.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import registry
from registry.http_client import HttpRegistry
from registry.local import LocalRegistry
from registry.location import open_local
from registry.server_location import open_store
from tests.support.mounted_service import MountedServer, mounted_server
from tests.support.synthetic import CHAT_TEMPLATE, write_adapter, write_base

__all__ = ["CHAT_TEMPLATE", "write_adapter", "write_base"]

#: The implementations every protocol test runs on.
KINDS = ["directory", "http", "servers"]
#: For a test that reaches the directory behind ``reg`` by its path (``reg_path``).
ON_A_DIRECTORY = pytest.mark.parametrize("reg_kind", ["directory", "http"])
#: Where the records live, for the modules that run on both (see the module docstring).
RECORDS = ["sqlite", "postgresql"]


@pytest.fixture
def settings() -> registry.RegistrySettings:
    return registry.RegistrySettings(user="tester")


@pytest.fixture
def reg_path(tmp_path: Path) -> Path:
    return tmp_path / "reg"


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return write_base(tmp_path / "tiny-base")


@pytest.fixture
def dataset_file(tmp_path: Path) -> Path:
    path = tmp_path / "support-data.jsonl"
    path.write_text('{"prompt": "hi", "completion": "hello"}\n{"prompt": "a", "completion": "b"}\n')
    return path


@pytest.fixture
def make_adapter(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10_000))

    def make(name: str = "support", **kwargs: Any) -> Path:
        return write_adapter(tmp_path / "adapters" / f"{next(counter)}" / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def service() -> Iterator[MountedServer]:
    """One uvicorn server for the session; each test mounts its own app on it."""
    with mounted_server() as server:
        yield server


@pytest.fixture
def records() -> str:
    """Where ``local_reg`` keeps its records (a module overrides this to run on both)."""
    return "sqlite"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One real PostgreSQL cluster for the session; each test takes its own database
    (``postgres_server.new_database()``)."""
    from tests.support.postgres import postgres

    with postgres() as server:
        yield server


@pytest.fixture
def local_reg(
    reg_path: Path,
    settings: registry.RegistrySettings,
    base_dir: Path,
    dataset_file: Path,
    records: str,
    request: pytest.FixtureRequest,
) -> Iterator[LocalRegistry]:
    """A registry, open, holding base ``tiny-base`` and dataset ``support-data``: a
    directory, or (``records`` = postgresql) a fresh PostgreSQL database whose blobs are
    in ``reg_path``."""
    if records == "postgresql":
        server = request.getfixturevalue("postgres_server")
        opener = open_store(server.new_database(), str(reg_path), settings=settings, create=True)
    else:
        opener = open_local(reg_path, settings=settings)
    with opener as opened:
        opened.add_base(base_dir, name="tiny-base", license="apache-2.0")
        opened.add_dataset(dataset_file, name="support-data")
        yield opened


def reopen(
    opened: LocalRegistry, settings: registry.RegistrySettings, *, read_only: bool | None = None
) -> LocalRegistry:
    """Open again the registry ``opened`` is (a directory, or its PostgreSQL database)."""
    if opened.location.startswith("postgresql://"):
        return open_store(opened.location, settings=settings, read_only=read_only)
    return open_local(opened.root, settings=settings, read_only=read_only)


@pytest.fixture(params=KINDS)
def reg_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backing_reg(
    reg_kind: str, local_reg: LocalRegistry, request: pytest.FixtureRequest
) -> LocalRegistry:
    """The store behind ``reg``, opened directly: ``local_reg`` (a directory, or records
    in PostgreSQL with blobs in a directory), or ``pg_s3_reg`` for the kinds on servers.
    (``local_reg`` is a static dependency so that a module's ``records`` parameters reach
    it; on servers it is built and unused.)"""
    if reg_kind in ("servers", "postgresql"):
        backing: LocalRegistry = request.getfixturevalue("pg_s3_reg")
        return backing
    return local_reg


@pytest.fixture
def reg(
    reg_kind: str,
    backing_reg: LocalRegistry,
    settings: registry.RegistrySettings,
    request: pytest.FixtureRequest,
) -> Iterator[registry.Registry]:
    """The registry under test (``backing_reg`` itself, or a service over it, or two),
    holding base ``tiny-base`` and dataset ``support-data``. ``reg.location`` is what a
    CLI takes."""
    if reg_kind in ("directory", "postgresql"):
        yield backing_reg
        return
    if reg_kind == "servers":
        yield request.getfixturevalue("pg_s3_servers")
        return
    service: MountedServer = request.getfixturevalue("service")
    with service.serve(backing_reg, settings) as url, HttpRegistry(url, settings) as client:
        yield client


@pytest.fixture
def pg_s3_reg(
    postgres_server: Any,
    seaweed_store: Any,
    settings: registry.RegistrySettings,
    base_dir: Path,
    dataset_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LocalRegistry]:
    """A registry on servers: records in a fresh PostgreSQL database, blobs in a fresh
    prefix of the session's SeaweedFS; holding ``tiny-base`` and ``support-data``."""
    for key, value in seaweed_store.env().items():
        monkeypatch.setenv(key, value)
    url = postgres_server.new_database()
    with open_store(url, seaweed_store.location(), settings=settings, create=True) as opened:
        opened.add_base(base_dir, name="tiny-base", license="apache-2.0")
        opened.add_dataset(dataset_file, name="support-data")
        yield opened


@pytest.fixture
def pg_s3_servers(
    pg_s3_reg: LocalRegistry, settings: registry.RegistrySettings, service: MountedServer
) -> Iterator[HttpRegistry]:
    """A client of two registry services over ``pg_s3_reg``'s database and bucket prefix
    (the second opened anew, as a second `registry serve` would), requests alternating
    between them."""
    with (
        open_store(pg_s3_reg.location, settings=settings) as second,
        service.serve_balanced([pg_s3_reg, second], settings) as (url, balancer),
        HttpRegistry(url, settings) as client,
    ):
        yield client
        if sum(balancer.served) > 2:
            assert min(balancer.served) > 0, f"one server got every request: {balancer.served}"


@pytest.fixture(scope="session")
def served_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One `registry serve` for the service tests (tests.support.served_registry: tokens
    ``ci`` write and ``viewer`` read, a short read timeout and upload limit), started
    once for the session, as a real server is."""
    from tests.support.served_registry import build_registry, served

    work = tmp_path_factory.mktemp("served")
    root = build_registry(work / "reg", work)
    with served(root, work / "serve.log") as running:
        yield running


@pytest.fixture(scope="session")
def seaweed_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real SeaweedFS (S3 API) for the session, with an empty bucket; each test takes
    its own prefix (``seaweed_store.location()``)."""
    from tests.support.seaweed import seaweed

    with seaweed(tmp_path_factory.mktemp("seaweed")) as store:
        yield store
