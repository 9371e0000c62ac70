"""A client of several `registry serve` processes of one registry
(registry/http_servers.py, ``REGISTRY_URL=http://a,http://b``): which failures move on to
the next server (a table), and two real servers over one registry whose blobs are in S3,
one killed with SIGKILL, the other carrying on for reads, pulls and pushes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import registry
from registry.blob_location import record_blobs
from registry.cli import main
from registry.errors import RegistryUnavailableError, UnsupportedLocationError
from registry.http_servers import may_move_on, split_urls
from registry.location import open_local
from tests.support.registry_service import registry_service
from tests.support.seaweed import free_ports

_REQUEST = httpx.Request("GET", "http://x")


@pytest.mark.parametrize(
    ("method", "exc", "moves_on"),
    [
        ("GET", httpx.ConnectError("refused", request=_REQUEST), True),
        ("POST", httpx.ConnectError("refused", request=_REQUEST), True),
        ("POST", httpx.ConnectTimeout("slow", request=_REQUEST), True),
        ("GET", httpx.ReadTimeout("slow", request=_REQUEST), True),
        ("GET", httpx.RemoteProtocolError("cut", request=_REQUEST), True),
        ("POST", httpx.ReadTimeout("slow", request=_REQUEST), False),  # it may have been done
        ("POST", httpx.RemoteProtocolError("cut", request=_REQUEST), False),
    ],
)
def test_which_failures_move_on(method: str, exc: httpx.TransportError, moves_on: bool) -> None:
    assert may_move_on(method, exc) is moves_on


def test_a_location_names_one_or_several_servers() -> None:
    assert split_urls("http://a:1/") == ["http://a:1"]
    assert split_urls("http://a:1, https://b:2/p/") == ["http://a:1", "https://b:2/p"]
    for bad in ("http://a:1,", "http://a:1,,http://b", "http://a:1,/srv/reg"):
        with pytest.raises(UnsupportedLocationError):
            split_urls(bad)


def test_none_answering_is_registry_unavailable(settings: registry.RegistrySettings) -> None:
    ports = free_ports(2)
    location = ",".join(f"http://127.0.0.1:{p}" for p in ports)
    with (
        registry.open(location, settings=settings) as reg,
        pytest.raises(RegistryUnavailableError, match="cannot reach"),
    ):
        reg.list_adapters()


def test_two_servers_one_killed(
    seaweed_store: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    settings: registry.RegistrySettings,
    base_dir: Path,
    dataset_file: Path,
    make_adapter: Callable[..., Path],
) -> None:
    for name, value in seaweed_store.env().items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "reg"
    record_blobs(root, seaweed_store.location())
    with open_local(root, settings=settings) as local:
        local.add_base(base_dir, name="tiny-base", license="apache-2.0")
        local.add_dataset(dataset_file, name="support-data")
    with (
        registry_service(root, tmp_path / "a.log") as first,
        registry_service(root, tmp_path / "b.log") as second,
    ):
        location = f"{first.url},{second.url}"
        with registry.open(location, settings=settings) as reg:
            assert reg.location == location
            reg.push_adapter(make_adapter("support"), dataset="support-data")
            os.killpg(first.popen.pid, signal.SIGKILL)  # the server in use dies
            first.popen.wait()
            assert [a.ref for a in reg.list_adapters()] == ["support@1"]
            reg.push_adapter(make_adapter("billing"), dataset="support-data")
            assert reg.resolve("billing").version == 1
            reg.pull("billing@1", tmp_path / "pulled")
            assert (tmp_path / "pulled" / "adapter_config.json").is_file()

        # the CLI takes the same comma-separated location
        result = CliRunner().invoke(main, ["ls", "--registry", location])
        assert result.exit_code == 0 and "billing" in result.output, result.output
