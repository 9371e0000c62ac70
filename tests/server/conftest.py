"""A real gateway in front of the session's real vLLM server: `gateway serve --backend`,
run as its own process exactly as in production (an in-process server would share one
GIL with the test's client threads, and on 2 cores next to vLLM that skews every timing).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.supervisor import free_port
from tests.conftest import BASE_NAME, TEST_DTYPE

GATEWAY = str(Path(sys.executable).with_name("gateway"))


@dataclass
class RunningGateway:
    url: str
    vllm_url: str
    registry: Path
    log: Path

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)


def settings_env(**overrides: Any) -> dict[str, str]:
    """GatewaySettings overrides as the GATEWAY_* variables the process reads."""
    env = {}
    for key, value in overrides.items():
        if hasattr(value, "__iter__") and not isinstance(value, str):
            value = json.dumps([v.model_dump() if hasattr(v, "model_dump") else v for v in value])
        env[f"GATEWAY_{key.upper()}"] = str(value)
    return env


@contextmanager
def running_gateway(
    vllm_url: str, registry_dir: Path, cache: Path, *, ready: bool = True, **overrides: Any
) -> Iterator[RunningGateway]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_LOCAL__DTYPE": TEST_DTYPE,
        "GATEWAY_CACHE_DIR": str(cache),
        **settings_env(**overrides),
    }
    log = cache / f"gateway-{port}.log"
    cmd = [
        GATEWAY,
        "serve",
        "--registry",
        str(registry_dir),
        "--backend",
        vllm_url,
        "--base",
        BASE_NAME,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        path = "/ready" if ready else "/health"
        while not _answers(url + path):
            assert proc.poll() is None, f"gateway exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{url}{path} not 200 within 120 s"
            time.sleep(0.2)
        yield RunningGateway(url, vllm_url, registry_dir, log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


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
