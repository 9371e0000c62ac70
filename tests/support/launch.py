"""Real vLLM and gateway processes, launched exactly as in production: vLLM by the
supervisor's own command line (`server.supervisor.vllm_command`), the gateway as
`gateway serve` in its own process (an in-process server would share one GIL with the
caller's client threads, and on 2 cores next to vLLM that skews every timing). Each runs
in its own process group, which `stop` takes down whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from server.settings import GatewaySettings
from server.supervisor import free_port, vllm_command, vllm_env
from tests.support.zoo import BASE_DIR, BASE_NAME

GATEWAY = str(Path(sys.executable).with_name("gateway"))
VLLM_START_TIMEOUT_S = 400


@dataclass
class Process:
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until `url` answers 200; fails early if `proc` exits first."""
    deadline = time.monotonic() + timeout_s
    while not answers(url):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")
        time.sleep(0.3)


@contextmanager
def serving(
    cmd: list[str], port: int, log: Path, ready_path: str, env: dict[str, str], timeout_s: float
) -> Iterator[Process]:
    """Run `cmd` (listening on `port`) in its own process group until the block ends."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    proc = Process(f"http://127.0.0.1:{port}", popen, log)
    try:
        try:
            wait_for(proc.url + ready_path, timeout_s, popen)
        except BaseException:
            print(log.read_text(errors="replace")[-4000:])
            raise
        yield proc
    finally:
        proc.stop()


def vllm_server(settings: GatewaySettings, log: Path) -> Any:
    """A real vLLM OpenAI server on the committed tiny model."""
    port = free_port()
    cmd = vllm_command(settings, BASE_DIR, BASE_NAME, port)
    return serving(cmd, port, log, "/health", vllm_env(), VLLM_START_TIMEOUT_S)


def settings_env(**overrides: Any) -> dict[str, str]:
    """GatewaySettings overrides as the GATEWAY_* variables the process reads."""
    env = {}
    for key, value in overrides.items():
        if hasattr(value, "__iter__") and not isinstance(value, str):
            value = json.dumps([v.model_dump() if hasattr(v, "model_dump") else v for v in value])
        env[f"GATEWAY_{key.upper()}"] = str(value)
    return env


def gateway(
    registry_dir: Path | str,
    cache: Path,
    *,
    backend: str | tuple[str, ...] | None,
    ready: bool = True,
    env: dict[str, str] | None = None,
    timeout_s: float = 120,
) -> Any:
    """`gateway serve` on a free port: `--backend URL` (one for each of several), or (None)
    launching its own vLLM.
    Waits for /ready (or only /health with `ready=False`)."""
    port = free_port()
    cmd = [GATEWAY, "serve", "--registry", str(registry_dir), "--base", BASE_NAME,
           "--port", str(port), "--log-level", "warning"]  # fmt: skip
    if backend is not None:
        for url in (backend,) if isinstance(backend, str) else backend:
            cmd += ["--backend", url]
    else:
        timeout_s = max(timeout_s, VLLM_START_TIMEOUT_S)
    full_env = {**os.environ, "GATEWAY_CACHE_DIR": str(cache), **(env or {})}
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / f"gateway-{port}.log"
    return serving(cmd, port, log, "/ready" if ready else "/health", full_env, timeout_s)


def engine_processes(vllm_url: str) -> list[psutil.Process]:
    """The engine core and worker of the vLLM API server listening at ``vllm_url``."""
    port = vllm_url.rsplit(":", 1)[1]
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "vllm.entrypoints.openai.api_server" in " ".join(cmd) and port in cmd:
            return p.children(recursive=True)
    raise AssertionError("vLLM server process not found")


@contextmanager
def engine_paused(engine: list[psutil.Process]) -> Iterator[None]:
    """The engine (:func:`engine_processes`, found beforehand so pausing takes
    microseconds) SIGSTOPped for the block, its API server still answering: what it is
    generating stays in flight for as long as a test needs it to."""
    for p in engine:
        p.suspend()
    try:
        yield
    finally:
        for p in engine:
            p.resume()
