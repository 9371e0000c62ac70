"""The embedded default: one local vLLM OpenAI server, launched and kept alive.

If the process dies it is restarted with exponential back-off; meanwhile its backend is
down, so requests get 503 with Retry-After and `/ready` is false. The command line is a
pure function of the settings so tests and benchmarks launch vLLM exactly as the
gateway does.

By default the gateway reaches its vLLM over a Unix domain socket, not TCP on loopback
(issue 22: the hop is cheaper, and no other process on the host gets a port to it). The
socket lives in a private (0700) directory made for this supervisor under the system's
temporary directory, because a socket's path is limited to 107 bytes (`sun_path`) and a
cache directory may be longer; the directory is removed at stop. vLLM binds the path
and fails when a file is already there (EADDRINUSE), so the file a killed server left
behind is removed before each start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from pathlib import Path

from server import placement
from server.metrics import Metrics
from server.settings import GatewaySettings, child_env
from server.vllm_http import VllmBackend

log = logging.getLogger("loraport.gateway")

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


# sun_path holds 108 bytes, one of them the terminating NUL.
SUN_PATH_MAX = 107
SOCKET_NAME = "vllm.sock"


def vllm_command(
    settings: GatewaySettings, model_dir: Path, served_name: str, listen: int | Path
) -> list[str]:
    """The exact command line of the local vLLM server (docs/vllm.md says why these flags).
    `listen` is a TCP port (on `settings.local.host`) or the path of a Unix socket, where
    vLLM then listens alone (its `--uds` ignores `--host` and `--port`)."""
    local = settings.local
    where = (
        ["--uds", str(listen)]
        if isinstance(listen, Path)
        else ["--host", local.host, "--port", str(listen)]
    )
    return [
        local.python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_name,
        *where,
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


def _kill_tree(pgid: int) -> None:
    """SIGKILL every process left in the server's process group. vLLM's API server, its
    EngineCore and its worker share the group the supervisor gave the API server; killing
    only the API server (a crash, an OOM kill, `kill -9`) leaves the other two running
    under PID 1 with gigabytes of memory (on a GPU: device memory)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def vllm_env() -> dict[str, str]:
    """The local vLLM's environment, without the registry's (`REGISTRY_*`): the
    gateway hands it adapters by path, so its resolver plugin (server/plugin/vllm.py)
    stays off and the token goes no further than the gateway."""
    env = child_env({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"})
    return {k: v for k, v in env.items() if not k.startswith("REGISTRY_")}


def socket_dir() -> Path | None:
    """A fresh private directory for the local vLLM's socket, or None (after a log line)
    when none can be made or the socket's path in it would be too long for `sun_path`."""
    try:
        made = Path(tempfile.mkdtemp(prefix="loraport-vllm-"))  # mode 0700
    except OSError as e:
        log.warning(
            "cannot make a directory for the local vLLM's socket (%s): it listens on TCP "
            "on loopback instead",
            e,
        )
        return None
    if len(os.fsencode(made / SOCKET_NAME)) <= SUN_PATH_MAX:
        return made
    made.rmdir()
    log.warning(
        "the temporary directory %s is too long a path for a Unix socket (%d bytes at "
        "most): the local vLLM listens on TCP on loopback instead",
        made.parent, SUN_PATH_MAX,
    )  # fmt: skip
    return None


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
        self._socket_dir = socket_dir() if settings.local.unix_socket else None
        self.socket_path: Path | None = None
        listen: int | Path
        if self._socket_dir is not None:
            self.socket_path = listen = self._socket_dir / SOCKET_NAME
            self.url = "http://localhost"  # the host only fills the Host header
        else:
            listen = settings.local.port or free_port(settings.local.host)
            self.url = f"http://{settings.local.host}:{listen}"
        self.command = vllm_command(settings, model_dir, served_name, listen)
        self.log_path = log_path
        self._metrics = metrics
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.placement: placement.Placement | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def backend(self, timeout_s: float) -> VllmBackend:
        """The client of this server, over its socket or its port."""
        path = None if self.socket_path is None else str(self.socket_path)
        return VllmBackend(self.url, "local", timeout_s=timeout_s, unix_socket=path)

    async def run(self, backend: VllmBackend) -> None:
        local = self.settings.local
        backoff = local.restart_backoff_s
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        state = backend.state
        while not self._stopping:
            started = time.monotonic()
            if self.socket_path is not None:  # a killed server's socket: vLLM would not bind
                self.socket_path.unlink(missing_ok=True)
            try:
                with self.log_path.open("ab") as log_file:
                    self._proc = await asyncio.create_subprocess_exec(
                        *self.command,
                        env=vllm_env(),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,  # its own process group: see _kill_tree
                        # vLLM binds its worker by the cores it is allowed: all of them,
                        # even when this gateway has been placed on fewer.
                        preexec_fn=placement.unpin,
                    )
            except OSError as e:
                state.restarted(f"cannot start vLLM; retrying in {backoff:.0f}s")
                log.error("cannot start vLLM (%s); retrying in %.0fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, local.restart_backoff_max_s)
                continue
            state.launched()
            watchdog = asyncio.create_task(self._watch_start(backend, self._proc))
            code = await self._proc.wait()
            watchdog.cancel()
            _kill_tree(self._proc.pid)  # the engine and worker outlive a killed API server
            if self._stopping:
                return
            if time.monotonic() - started > 120:
                backoff = local.restart_backoff_s  # it had been running: start over
            state.restarted(f"local vLLM exited (code {code}); restarting in {backoff:.0f}s")
            log.error(
                "local vLLM exited with code %s; restarting in %.0fs (log %s): %s",
                code, backoff, self.log_path, self._log_tail(),
            )  # fmt: skip
            self._metrics.backend_restarts.labels(backend.label).inc()
            self._metrics.backend_up.labels(backend.label).set(0)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, local.restart_backoff_max_s)

    def restart(self, reason: str) -> None:
        """Replace a running server that answers wrongly: its whole tree is killed and
        `run` starts a fresh one."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            log.error("restarting the local vLLM: %s", reason)
            _kill_tree(proc.pid)

    async def _watch_start(self, backend: VllmBackend, proc: asyncio.subprocess.Process) -> None:
        """A vLLM that hangs before /health answers is killed, so `run` restarts it. Once
        healthy, its processes are placed on the host's cores (see `placement`) before it
        counts as ready: a request must not meet its engine core where the gateway runs."""
        deadline = time.monotonic() + self.settings.local.startup_timeout_s
        try:
            while time.monotonic() < deadline:
                if await backend.health():
                    self.placement = placement.apply(proc.pid, self.settings.cpu_placement)
                    return
                await asyncio.sleep(0.25)
            backend.state.restarted("local vLLM never answered /health; restarting it")
            _kill_tree(proc.pid)
        finally:
            backend.state.placed()

    async def stop(self) -> None:
        self._stopping = True
        try:
            await self._stop_server()
        finally:
            if self._socket_dir is not None:
                shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def _stop_server(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 20)
        _kill_tree(proc.pid)
        await proc.wait()

    def _log_tail(self, lines: int = 3) -> str:
        try:
            with self.log_path.open(errors="replace") as f:
                return " | ".join(line.strip() for line in deque(f, lines))
        except OSError:
            return ""
