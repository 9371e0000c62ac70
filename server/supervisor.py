"""The embedded default: one local vLLM OpenAI server, launched and kept alive.

If the process dies it is restarted with exponential back-off; meanwhile its backend is
down, so requests get 503 with Retry-After and `/ready` is false. The command line is a
pure function of the settings so tests and benchmarks launch vLLM exactly as the
gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections import deque
from pathlib import Path

from server.metrics import Metrics
from server.settings import GatewaySettings, child_env
from server.vllm_http import VllmBackend

# vLLM's structured-output backends that accept `disable_any_whitespace`.
_WHITESPACE_AWARE = ("xgrammar", "guidance")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def structured_config(settings: GatewaySettings) -> dict[str, object]:
    config: dict[str, object] = {"backend": settings.structured_backend}
    if settings.disable_any_whitespace and settings.structured_backend in _WHITESPACE_AWARE:
        config["disable_any_whitespace"] = True
    return config


def vllm_command(
    settings: GatewaySettings, model_dir: Path, served_name: str, port: int
) -> list[str]:
    """The exact command line of the local vLLM server (see ENVIRONMENT.md for the flags)."""
    local = settings.local
    return [
        local.python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_name,
        "--host", local.host,
        "--port", str(port),
        "--dtype", local.dtype,
        "--max-model-len", str(local.max_model_len),
        "--enforce-eager",
        "--gpu-memory-utilization", str(local.gpu_memory_utilization),
        "--enable-lora",
        "--max-lora-rank", str(local.max_lora_rank),
        "--max-loras", str(local.max_loras),
        "--max-cpu-loras", str(max(settings.max_loaded_adapters, local.max_loras)),
        "--structured-outputs-config", json.dumps(structured_config(settings)),
        *local.extra_args,
    ]  # fmt: skip


def vllm_env() -> dict[str, str]:
    return child_env({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"})


class Supervisor:
    """Runs the local vLLM until stopped, restarting it when it dies."""

    def __init__(
        self,
        settings: GatewaySettings,
        model_dir: Path,
        served_name: str,
        log_path: Path,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.port = settings.local.port or free_port(settings.local.host)
        self.url = f"http://{settings.local.host}:{self.port}"
        self.command = vllm_command(settings, model_dir, served_name, self.port)
        self.log_path = log_path
        self._metrics = metrics
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def run(self, backend: VllmBackend) -> None:
        local = self.settings.local
        backoff = local.restart_backoff_s
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        while not self._stopping:
            started = time.monotonic()
            state = backend.state
            try:
                with self.log_path.open("ab") as log:
                    self._proc = await asyncio.create_subprocess_exec(
                        *self.command,
                        env=vllm_env(),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,
                    )
            except OSError as e:
                state.detail = f"cannot start vLLM ({e}); retrying in {backoff:.0f}s"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, local.restart_backoff_max_s)
                continue
            watchdog = asyncio.create_task(self._kill_if_never_healthy(backend, self._proc))
            code = await self._proc.wait()
            watchdog.cancel()
            if self._stopping:
                return
            state.up, state.model_id = False, None
            state.generation += 1
            if time.monotonic() - started > 120:
                backoff = local.restart_backoff_s  # it had been running: start over
            state.detail = (
                f"local vLLM exited with code {code}; restarting in {backoff:.0f}s "
                f"(log {self.log_path}): {self._log_tail()}"
            )
            self._metrics.backend_restarts.labels(backend.label).inc()
            self._metrics.backend_up.labels(backend.label).set(0)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, local.restart_backoff_max_s)

    async def _kill_if_never_healthy(
        self, backend: VllmBackend, proc: asyncio.subprocess.Process
    ) -> None:
        """A vLLM that hangs before /health answers is killed, so `run` restarts it."""
        deadline = time.monotonic() + self.settings.local.startup_timeout_s
        while time.monotonic() < deadline:
            if await backend.health():
                return
            await asyncio.sleep(1.0)
        backend.state.detail = "local vLLM never answered /health; killing it to restart"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    def _log_tail(self, lines: int = 3) -> str:
        try:
            with self.log_path.open(errors="replace") as f:
                return " | ".join(line.strip() for line in deque(f, lines))
        except OSError:
            return ""
