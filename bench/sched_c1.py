"""Where each process's time goes at concurrency 1, beside a real vLLM: per request, the
CPU time and the time spent runnable but waiting for a core (the kernel's
/proc/PID/task/*/schedstat, every thread summed) of vLLM's API server, engine core and
worker, the gateway, and this load generator; blocks of requests sent straight to vLLM
and through the gateway alternate. Prints one JSON line.

    .venv/bin/python bench/sched_c1.py [--placement gateway+engine] [--blocks 8] [--requests 50]

`--placement` as in bench/gateway_overhead.py (`--backend` mode: vLLM started here, then
`gateway serve --backend`). Found with it (bench/README.md, "The engine core's spin"):
vLLM's engine core polls for its worker's answers, and where it shares the free core
everything else there waits behind it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import gateway_overhead as go
import psutil
from harness import BASE_NAME, fill_registry, load, machine, settings

from server import placement


def sched(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns runnable and waiting) of every thread of `pid` so far."""
    cpu = wait = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                on, waiting, _ = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
                cpu, wait = cpu + int(on), wait + int(waiting)
    return cpu, wait


def roles(group: int) -> dict[str, int]:
    """vLLM's processes by role (its API server leads the process group), the gateway's,
    and this process's."""
    out = {"vllm_api_server": group}
    for pid in go._members(group):
        title = go._comm(pid)
        if title.startswith("VLLM::EngineCor"):
            out["vllm_engine_core"] = pid
        elif title.startswith("VLLM::Worker"):
            out["vllm_worker"] = pid
    for p in psutil.process_iter(["cmdline"]):
        args = p.info["cmdline"] or []
        if p.pid != os.getpid() and any(a.endswith("/gateway") for a in args) and "serve" in args:
            out["gateway"] = p.pid
    out["load_generator"] = os.getpid()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--placement", default="gateway+engine",
                    choices=["gateway", "gateway+engine", "gateway+vllm"])  # fmt: skip
    ap.add_argument("--blocks", type=int, default=8, help="per side")
    ap.add_argument("--requests", type=int, default=50, help="per block")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sched-"))
    fill_registry(work / "registry")
    s = settings(local_dtype="bfloat16", max_loaded_adapters=4)
    load_start, n = os.getloadavg()[0], args.requests
    with go._external(s, work, args.placement) as (direct, via):
        group = go.vllm_group_of(direct)
        placement.pin_process(os.getpid(), go.free_cores(group))
        pids = roles(group)
        for url in (via, direct):
            load(url, go.bodies(BASE_NAME, 20, 8), 1)  # warm-up
        per: dict[str, list[dict[str, tuple[float, float]]]] = {"direct": [], "gateway": []}
        p50: dict[str, list[float]] = {"direct": [], "gateway": []}
        for i in range(args.blocks):
            for side in ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct"):
                before = {role: sched(pid) for role, pid in pids.items()}
                result = load(direct if side == "direct" else via, go.bodies(BASE_NAME, n, 8), 1)
                after = {role: sched(pid) for role, pid in pids.items()}
                per[side].append({
                    role: ((after[role][0] - before[role][0]) / n / 1e3,
                           (after[role][1] - before[role][1]) / n / 1e3)
                    for role in pids
                })  # fmt: skip
                p50[side].append(statistics.median(result.latencies_s) * 1e3)
    out: dict[str, Any] = {}
    for side, blocks in per.items():
        out[side] = {"p50_ms": round(statistics.median(p50[side]), 3)}
        for role in pids:
            out[side][role] = {
                "cpu_us": round(statistics.median(b[role][0] for b in blocks)),
                "waiting_us": round(statistics.median(b[role][1] for b in blocks)),
            }
    print(json.dumps({
        "bench": "sched_c1", "placement": args.placement, "machine": machine(),
        "requests_per_block": n, "blocks_per_side": args.blocks, **out,
        "load_avg_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
