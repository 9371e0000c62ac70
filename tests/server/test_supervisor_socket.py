"""Where the embedded vLLM listens (pure parts; tests/server/test_supervisor.py runs the
real server over its socket and over TCP)."""

from __future__ import annotations

import asyncio
import stat
import tempfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.metrics import Metrics
from server.settings import GatewaySettings, LocalVllm
from server.supervisor import SUN_PATH_MAX, Supervisor, socket_dir, vllm_command


def _settings(**local: object) -> GatewaySettings:
    return GatewaySettings(local=LocalVllm(**local))  # type: ignore[arg-type]


def test_the_command_line_names_a_socket_or_a_port_never_both() -> None:
    uds = vllm_command(_settings(), Path("/m"), "base", Path("/tmp/x/vllm.sock"))
    assert uds[uds.index("--uds") + 1] == "/tmp/x/vllm.sock"
    assert "--host" not in uds and "--port" not in uds
    tcp = vllm_command(_settings(unix_socket=False, host="127.0.0.2"), Path("/m"), "base", 8001)
    assert tcp[tcp.index("--host") + 1] == "127.0.0.2"
    assert tcp[tcp.index("--port") + 1] == "8001"
    assert "--uds" not in tcp
    assert [a for a in uds if a not in ("--uds", "/tmp/x/vllm.sock")] == [
        a for a in tcp if a not in ("--host", "127.0.0.2", "--port", "8001")
    ]


def _supervisor(settings: GatewaySettings) -> Supervisor:
    return Supervisor(settings, Path("/m"), "base", Path("/nonexistent/vllm.log"), Metrics())


def test_the_socket_is_private_short_and_removed_at_stop() -> None:
    sup = _supervisor(_settings())
    path = sup.socket_path
    assert path is not None
    assert len(str(path).encode()) <= SUN_PATH_MAX
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sup.command[sup.command.index("--uds") + 1] == str(path)
    assert sup.url == "http://localhost"
    asyncio.run(sup.stop())  # never started: the directory goes all the same
    assert not path.parent.exists()


def test_turned_off_it_listens_on_a_loopback_port() -> None:
    sup = _supervisor(_settings(unix_socket=False))
    assert sup.socket_path is None
    port = sup.command[sup.command.index("--port") + 1]
    assert sup.url == f"http://127.0.0.1:{port}" and int(port) > 0
    assert "--uds" not in sup.command


def test_a_temporary_directory_too_long_for_a_socket_falls_back_to_tcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert socket_dir() is None
    assert list(deep.iterdir()) == []  # the directory it tried is gone
    sup = _supervisor(_settings())
    assert sup.socket_path is None and "--port" in sup.command
    assert "too long a path for a Unix socket" in caplog.text


def test_an_address_given_with_the_socket_on_is_refused() -> None:
    with pytest.raises(ValidationError, match="GATEWAY_LOCAL__PORT only apply with"):
        LocalVllm(port=8100)
    with pytest.raises(ValidationError, match="GATEWAY_LOCAL__HOST and GATEWAY_LOCAL__PORT"):
        LocalVllm(host="127.0.0.2", port=8100)
    assert LocalVllm(unix_socket=False, port=8100).port == 8100


def test_the_cli_says_which_setting_to_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from server.cli import cli

    monkeypatch.setenv("GATEWAY_LOCAL__PORT", "8100")
    result = CliRunner().invoke(cli, ["serve", "--registry", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "GATEWAY_LOCAL__UNIX_SOCKET=false" in result.output


def test_no_writable_temporary_directory_falls_back_to_tcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    sup = _supervisor(_settings())
    assert sup.socket_path is None and "--port" in sup.command
    assert "cannot make a directory for the local vLLM's socket" in caplog.text
