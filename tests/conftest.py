"""Session fixtures shared by the whole suite: the committed demo zoo, a registry that
holds it, and ONE real vLLM CPU server (started once per session, launched with the
exact command line the gateway's supervisor uses)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import registry
from server.settings import GatewaySettings, LocalVllm
from server.supervisor import free_port, vllm_command, vllm_env

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BASE_DIR = EXAMPLES / "models" / "tiny-llama"
ADAPTERS = ("support-v1", "support-v2", "extract", "triage")
BASE_NAME = "tiny-llama"
# float32 on the CPU: the tiny model is cheap, and greedy parity with transformers+peft
# (which runs float32 too) is then exact rather than approximate.
TEST_DTYPE = "float32"
VLLM_START_TIMEOUT_S = 400


def adapter_dir(name: str) -> Path:
    return EXAMPLES / "adapters" / name


def fill_registry(location: Path) -> None:
    """The demo zoo as `make demo` registers it: base, four adapters, production aliases."""
    with registry.open(location) as reg:
        reg.add_base(BASE_DIR, name=BASE_NAME, license="apache-2.0")
        for name in ADAPTERS:
            reg.add_dataset(EXAMPLES / "data" / f"{name}.jsonl", name=f"{name}-data")
            reg.push_adapter(
                adapter_dir(name),
                name=name,
                base=BASE_NAME,
                dataset=f"{name}-data",
                alias="production",
            )


@pytest.fixture(scope="session")
def zoo_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    location = tmp_path_factory.mktemp("zoo") / "registry"
    fill_registry(location)
    return location


def gateway_settings(**overrides: object) -> GatewaySettings:
    local = LocalVllm(dtype=TEST_DTYPE, max_loras=4, max_lora_rank=8)
    return GatewaySettings(local=local, **overrides)  # type: ignore[arg-type]


def wait_for(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real vLLM OpenAI server on the committed tiny model, for the whole session."""
    port = free_port()
    settings = gateway_settings(max_loaded_adapters=8)
    cmd = vllm_command(settings, BASE_DIR, BASE_NAME, port)
    log_path = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, env=vllm_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", VLLM_START_TIMEOUT_S, proc)
    except BaseException:
        _kill(proc)
        print(log_path.read_text(errors="replace")[-4000:])
        raise
    yield url
    _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
