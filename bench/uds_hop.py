"""The gateway-to-vLLM hop over TCP on loopback and over a Unix socket (issue 22, lever 1:
the embedded default's vLLM listens on a socket, server/supervisor.py), in isolation. The
gateway's own client (`server.vllm_http.VllmBackend`) runs in this process and sends chat
requests, one at a time, to two bench/instant_backend.py processes (answers at once), one on
a loopback port and one on a Unix socket, in batches that alternate between them. Per batch:
CPU per request of both ends (this process's and the server's, from the kernel) and the
median latency. Prints one JSON line.

    .venv/bin/python bench/uds_hop.py [--requests 1000] [--batches 20]

No `gateway serve` in front: a gateway reaches a remote backend over TCP only, and a
public setting for remote Unix-socket backends is not worth adding for a benchmark; the
client and the server are the same code as in production, so the difference is the hop's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from harness import ROOT, machine

from server.supervisor import free_port
from server.vllm_http import VllmBackend

MESSAGES = [{"role": "user", "content": "Hello, my parcel is late."}]
BODY = {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 8, "temperature": 0}


def _cpu_s(p: psutil.Process) -> float:
    """CPU time of every thread of `p`, in ns from the scheduler (`cpu_times` counts in
    clock ticks, 10 ms: too coarse for a batch)."""
    total = 0
    for task in Path(f"/proc/{p.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def _batch(backend: VllmBackend, server: psutil.Process, n: int) -> dict[str, float]:
    latencies = []
    server0, client0 = _cpu_s(server), time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        await backend.generate("/v1/chat/completions", BODY)
        latencies.append(time.perf_counter() - t0)
    client_s, server_s = time.process_time() - client0, _cpu_s(server) - server0
    return {
        "client_us": client_s / n * 1e6,
        "server_us": server_s / n * 1e6,
        "total_us": (client_s + server_s) / n * 1e6,
        "p50_us": statistics.median(latencies) * 1e6,
    }


def _summary(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1),
            "max": round(max(xs), 1)}  # fmt: skip


async def _run(targets: dict[str, tuple[VllmBackend, psutil.Process]], n: int, batches: int
               ) -> dict[str, Any]:  # fmt: skip
    for backend, _ in targets.values():
        deadline = time.monotonic() + 60
        while not await backend.health():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{backend.label} never answered /health")
            await asyncio.sleep(0.2)
        await _batch(backend, targets[backend.label][1], 50)  # warm-up
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for i in range(batches):
        order = list(targets) if i % 2 == 0 else list(reversed(targets))
        for name in order:
            backend, server = targets[name]
            rows[name].append(await _batch(backend, server, n))
    out: dict[str, Any] = {
        name: {k: _summary([r[k] for r in rs]) for k in rs[0]} for name, rs in rows.items()
    }
    saved = [t["total_us"] - u["total_us"] for t, u in zip(rows["tcp"], rows["uds"], strict=True)]
    out["tcp_minus_uds_total_us"] = _summary(saved)
    p50 = [t["p50_us"] - u["p50_us"] for t, u in zip(rows["tcp"], rows["uds"], strict=True)]
    out["tcp_minus_uds_p50_us"] = _summary(p50)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="per batch")
    ap.add_argument("--batches", type=int, default=20, help="per transport")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="uds-hop-"))
    port, sock = free_port(), work / "instant.sock"
    script = str(ROOT / "bench" / "instant_backend.py")
    procs = [
        subprocess.Popen([sys.executable, script, arg], stderr=subprocess.DEVNULL)
        for arg in (str(port), f"unix:{sock}")
    ]
    load_start = os.getloadavg()[0]
    started = time.perf_counter()

    async def go() -> dict[str, Any]:
        tcp = VllmBackend(f"http://127.0.0.1:{port}", "tcp", timeout_s=30)
        uds = VllmBackend("http://localhost", "uds", timeout_s=30, unix_socket=str(sock))
        try:
            return await _run(
                {"tcp": (tcp, psutil.Process(procs[0].pid)),
                 "uds": (uds, psutil.Process(procs[1].pid))}, args.requests, args.batches,
            )  # fmt: skip
        finally:
            await tcp.aclose()
            await uds.aclose()

    try:
        result = asyncio.run(go())
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    print(json.dumps({
        "bench": "uds_hop", "machine": machine(), "requests_per_batch": args.requests,
        "batches_per_transport": args.batches, **result,
        "wall_s": round(time.perf_counter() - started),
        "load_avg_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
