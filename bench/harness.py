"""What every gateway benchmark needs: a real vLLM server, a real gateway process in
front of it, a registry holding the demo zoo (all three from `tests.support`, the same
code the tests use), and a closed-loop load generator.

Everything runs on this machine's loopback; every loop is bounded in count and time. A
target is a base URL (`http://127.0.0.1:PORT`) or `unix:PATH`, a server on a Unix socket
(the embedded gateway's vLLM listens on one: server/supervisor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.settings import GatewaySettings, LocalVllm  # noqa: E402
from server.supervisor import free_port  # noqa: E402
from tests.support import launch  # noqa: E402
from tests.support.launch import Process, serving  # noqa: E402
from tests.support.zoo import ADAPTERS, BASE_DIR, BASE_NAME, EXAMPLES, fill_registry  # noqa: E402

__all__ = ["ADAPTERS", "BASE_DIR", "BASE_NAME", "EXAMPLES", "ROOT", "fill_registry"]


UNIX = "unix:"


def client(target: str, **kw: Any) -> httpx.AsyncClient:
    """An async client of `target` (a base URL or `unix:PATH`); `limits` and the rest go
    to httpx."""
    if target.startswith(UNIX):
        limits = kw.pop("limits", httpx.Limits())
        transport = httpx.AsyncHTTPTransport(uds=target[len(UNIX) :], limits=limits)
        return httpx.AsyncClient(transport=transport, base_url="http://localhost", **kw)
    return httpx.AsyncClient(base_url=target, **kw)


def get(target: str, path: str) -> httpx.Response:
    """One GET of `path` at `target` (a base URL or `unix:PATH`)."""
    if target.startswith(UNIX):
        transport = httpx.HTTPTransport(uds=target[len(UNIX) :])
        with httpx.Client(transport=transport, base_url="http://localhost") as c:
            return c.get(path)
    return httpx.get(f"{target}{path}")


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"
    )


def settings(**kw: Any) -> GatewaySettings:
    local = LocalVllm(**{k[6:]: v for k, v in kw.items() if k.startswith("local_")})
    return GatewaySettings(
        local=local, **{k: v for k, v in kw.items() if not k.startswith("local_")}
    )


def vllm(s: GatewaySettings, log: Path) -> contextlib.AbstractContextManager[Process]:
    """A real vLLM server, launched exactly as the gateway's supervisor launches it."""
    return launch.vllm_server(s, log)  # type: ignore[no-any-return]


def instant_backend(log: Path, delay_s: float = 0.0) -> contextlib.AbstractContextManager[Process]:
    """bench/instant_backend.py: answers at once (or after `delay_s`), for the gateway's
    own cost."""
    port = free_port()
    cmd = [sys.executable, str(ROOT / "bench" / "instant_backend.py"), str(port)]
    if delay_s:
        cmd += ["127.0.0.1", str(delay_s)]
    return serving(cmd, port, log, "/health", dict(os.environ), 120)  # type: ignore[no-any-return]


def gateway(
    registry_dir: Path, backend: str, cache: Path, env: dict[str, str] | None = None
) -> contextlib.AbstractContextManager[Process]:
    """`gateway serve --backend`, as its own process (as in production)."""
    return launch.gateway(registry_dir, cache, backend=backend, env=env, timeout_s=600)  # type: ignore[no-any-return]


@contextlib.contextmanager
def embedded_gateway(
    registry_dir: Path, cache: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[str, str]]:
    """`gateway serve` with no backend: it launches its own vLLM. Yields (that vLLM as a
    target: `unix:PATH` on its socket, the default, or its URL with
    `GATEWAY_LOCAL__UNIX_SOCKET=false`; the gateway's URL)."""
    import psutil

    with launch.gateway(registry_dir, cache, backend=None, env=env) as g:
        for child in psutil.Process(g.popen.pid).children(recursive=True):
            args = child.cmdline()
            if "vllm.entrypoints.openai.api_server" in " ".join(args):
                if "--uds" in args:
                    yield f"{UNIX}{args[args.index('--uds') + 1]}", g.url
                else:
                    yield f"http://127.0.0.1:{args[args.index('--port') + 1]}", g.url
                return
        raise RuntimeError("the gateway launched no vLLM")


@dataclass
class LoadResult:
    latencies_s: list[float]
    wall_s: float
    completion_tokens: int
    errors: int

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_s)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def _load(
    url: str, bodies: list[dict[str, Any]], concurrency: int, path: str = "/v1/chat/completions"
) -> LoadResult:
    queue = list(reversed(bodies))
    latencies: list[float] = []
    tokens = errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with client(url, timeout=300, limits=limits) as c:

        async def worker() -> None:
            nonlocal tokens, errors
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                r = await c.post(path, json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                    continue
                tokens += int(r.json()["usage"]["completion_tokens"])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return LoadResult(latencies, wall, tokens, errors)


def load(url: str, bodies: list[dict[str, Any]], concurrency: int) -> LoadResult:
    return asyncio.run(_load(url, bodies, concurrency))


async def _interleaved(
    pairs: list[tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]], gap_s: float
) -> tuple[list[float], list[float]]:
    """Alternate A and B requests one at a time, each side on its own kept-alive
    connection (one client per side and target), `gap_s` between one answer and the next
    request; returns (A latencies, B latencies)."""
    a_lat: list[float] = []
    b_lat: list[float] = []
    clients: dict[tuple[str, str], httpx.AsyncClient] = {}
    async with contextlib.AsyncExitStack() as stack:
        for (a_url, a_body), (b_url, b_body) in pairs:
            for side, url, body, out in (("a", a_url, a_body, a_lat), ("b", b_url, b_body, b_lat)):
                c = clients.get((side, url))
                if c is None:
                    c = clients[side, url] = await stack.enter_async_context(
                        client(url, timeout=300)
                    )
                t0 = time.perf_counter()
                r = await c.post("/v1/chat/completions", json=body)
                out.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
                if gap_s:
                    await asyncio.sleep(gap_s)
    return a_lat, b_lat


def interleaved(
    pairs: list[tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]],
    gap_s: float = 0.0,
) -> tuple[list[float], list[float]]:
    return asyncio.run(_interleaved(pairs, gap_s))


def ms(x: float) -> float:
    return round(x * 1000, 3)


def median(xs: list[float]) -> float:
    return statistics.median(xs)
