"""The gateway binds its address before anything starts, and says why it cannot."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli import cli
from server.listen import EXIT_CANNOT_LISTEN, CannotListenError, bind
from tests.conftest import BASE_NAME


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


def test_bind_gives_a_bound_socket_on_a_free_port() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "is already in use"),
        ("192.0.2.1", "give --host an address of this machine"),  # TEST-NET-1: never ours
        ("no-such-host.invalid", "give --host an address of this machine"),
    ],
)
def test_bind_refusals_name_the_address_and_what_to_do(
    taken_port: int, host: str, expected: str
) -> None:
    with pytest.raises(CannotListenError, match=expected) as caught:
        bind(host, taken_port)
    assert f"{host}:{taken_port}" in str(caught.value)


def test_serve_on_a_port_in_use_exits_with_its_own_code(
    zoo_registry: Path, taken_port: int
) -> None:
    """Was uvicorn's exit 3 (the registry's "not found"), after the app had started."""
    result = CliRunner().invoke(
        cli,
        ["serve", "--registry", str(zoo_registry), "--base", BASE_NAME, "--port", str(taken_port),
         "--backend", "http://127.0.0.1:9"],
    )  # fmt: skip
    assert result.exit_code == EXIT_CANNOT_LISTEN == 41
    assert f"port {taken_port} is already in use" in result.output
    assert "--port" in result.output


def test_an_app_that_fails_to_start_exits_1_not_uvicorns_3(
    zoo_registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn exits 3 when the app's startup fails: the registry's "not found" code."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    import server.app

    @asynccontextmanager
    async def failing(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("cannot start")
        yield

    monkeypatch.setattr(server.app, "create_app", lambda settings: FastAPI(lifespan=failing))
    result = CliRunner().invoke(
        cli,
        ["serve", "--registry", str(zoo_registry), "--base", BASE_NAME, "--port", "0",
         "--backend", "http://127.0.0.1:9"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "the gateway failed to start" in result.output
