"""A real gateway (uvicorn on a loopback port, in a thread) in front of the session's
real vLLM server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from server.app import Runtime, create_app
from server.supervisor import free_port
from tests.conftest import BASE_NAME, gateway_settings


@dataclass
class RunningGateway:
    url: str
    app: FastAPI
    vllm_url: str

    @property
    def runtime(self) -> Runtime:
        rt: Runtime = self.app.state.runtime
        return rt

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)  # type: ignore[arg-type]


@contextmanager
def running_gateway(
    vllm_url: str, registry_dir: Path, cache: Path, *, ready: bool = True, **overrides: object
) -> Iterator[RunningGateway]:
    settings = gateway_settings(
        registry=str(registry_dir), backends=(vllm_url,), cache_dir=cache, base=BASE_NAME,
        **overrides,
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        path = "/ready" if ready else "/health"
        while not _answers(url + path):
            assert thread.is_alive(), "the gateway failed to start (see its log above)"
            assert time.monotonic() < deadline, f"{url}{path} not 200 within 120 s"
            time.sleep(0.2)
        yield RunningGateway(url, app, vllm_url)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def gateway(
    vllm_server: str, zoo_registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """The default gateway: every demo adapter routable, no auth."""
    with running_gateway(vllm_server, zoo_registry, tmp_path_factory.mktemp("cache")) as gw:
        yield gw


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def scrape(url: str, name: str, **labels: str) -> float:
    """Sum of a vLLM metric's samples whose labels include `labels`."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def wait_until(predicate, timeout_s: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())
