"""The embedded default, end to end: `gateway serve` with no --backend launches its own
vLLM, answers 503 + Retry-After while that vLLM is dead, restarts it, and takes it down
on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from server.supervisor import free_port
from tests.conftest import TEST_DTYPE, VLLM_START_TIMEOUT_S, fill_registry, wait_for
from tests.server.conftest import wait_until

pytestmark = pytest.mark.vllm

GATEWAY = str(Path(sys.executable).with_name("gateway"))
MSGS = [{"role": "user", "content": "Hello, my parcel is late."}]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, psutil.Process]]:
    root = tmp_path_factory.mktemp("embedded")
    fill_registry(root / "registry")
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_LOCAL__DTYPE": TEST_DTYPE,
        "GATEWAY_CACHE_DIR": str(root),
        "GATEWAY_LOCAL__RESTART_BACKOFF_S": "0.5",
        "GATEWAY_LOCAL__MAX_LORA_RANK": "8",
    }
    log = (root / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [GATEWAY, "serve", "--registry", str(root / "registry"), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/ready", VLLM_START_TIMEOUT_S, proc)
    except BaseException:
        proc.kill()
        print((root / "gateway.log").read_text()[-3000:], (root / "vllm.log").read_text()[-3000:])
        raise
    yield url, psutil.Process(proc.pid)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    log.close()


def vllm_of(gateway: psutil.Process) -> psutil.Process:
    for child in gateway.children(recursive=True):
        if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no vLLM child process")


def chat(url: str, model: str = "support-v1") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        timeout=60,
        json={"model": model, "messages": MSGS, "max_tokens": 16},
    )


def test_serves_through_its_own_vllm(embedded: tuple[str, psutil.Process]) -> None:
    url, _ = embedded
    r = chat(url)
    assert r.status_code == 200, r.text
    assert r.headers["x-loraport-adapter"] == "support-v1@1"


def test_vllm_crash_gives_503_then_recovers(embedded: tuple[str, psutil.Process]) -> None:
    url, gateway = embedded
    old = vllm_of(gateway)
    os.killpg(old.pid, signal.SIGKILL)
    assert wait_until(lambda: httpx.get(f"{url}/ready").status_code == 503, 30)
    r = chat(url)
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "backend_unavailable"
    assert httpx.get(f"{url}/health").status_code == 200  # the gateway itself is fine
    wait_for(f"{url}/ready", VLLM_START_TIMEOUT_S)
    assert vllm_of(gateway).pid != old.pid
    r = chat(url, "triage")  # adapters load again into the new server
    assert r.status_code == 200, r.text
    metrics = httpx.get(f"{url}/metrics").text
    assert 'loraport_backend_restarts_total{backend="local"} 1.0' in metrics


def test_stopping_the_gateway_stops_its_vllm(tmp_path: Path) -> None:
    """SIGTERM to the gateway takes its vLLM process group down with it: no orphans."""
    root = tmp_path
    fill_registry(root / "registry")
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_LOCAL__DTYPE": TEST_DTYPE,
        "GATEWAY_CACHE_DIR": str(root),
        "GATEWAY_LOCAL__MAX_LORA_RANK": "8",
    }
    proc = subprocess.Popen(
        [GATEWAY, "serve", "--registry", str(root / "registry"), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = psutil.Process(proc.pid)
    assert wait_until(
        lambda: any(
            "vllm.entrypoints" in " ".join(c.cmdline()) for c in gateway.children(recursive=True)
        ),
        60,
    )
    children = gateway.children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert wait_until(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 30
    )
