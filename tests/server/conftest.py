"""A real gateway in front of the session's real vLLM server: `gateway serve --backend`,
run as its own process exactly as in production (`tests.support.launch`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_DTYPE
from tests.support import launch
from tests.support.launch import settings_env


@dataclass
class RunningGateway:
    url: str
    vllm_url: str
    registry: Path
    log: Path

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)


@contextmanager
def running_gateway(
    vllm_url: str, registry_dir: Path, cache: Path, *, ready: bool = True, **overrides: Any
) -> Iterator[RunningGateway]:
    env = {"GATEWAY_LOCAL__DTYPE": TEST_DTYPE, **settings_env(**overrides)}
    with launch.gateway(registry_dir, cache, backend=vllm_url, ready=ready, env=env) as proc:
        yield RunningGateway(proc.url, vllm_url, registry_dir, proc.log)


@pytest.fixture(scope="session")
def gateway(
    vllm_server: str, zoo_registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """The default gateway: every demo adapter routable, no auth."""
    with running_gateway(vllm_server, zoo_registry, tmp_path_factory.mktemp("cache")) as gw:
        yield gw


def scrape(url: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples (at url/metrics) whose labels include `labels`."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())
