"""Where the gateway's added latency lies: the way in and the way out, timed from outside.

    .venv/bin/python bench/gateway_trace.py [--requests 300] [--delay-ms 35] [--gap-ms 5]
        [--tree NAME=DIR ...] [--pin CORE]

bench/instant_backend.py answers after `--delay-ms` (as an engine generating; the gateway
idles between requests, as it does next to vLLM) and notes when each traced request
entered its handler and left it. Requests go one at a time, `--gap-ms` apart, straight to
it ("direct") and through each gateway (`gateway serve --backend`, one per `--tree`, as in
bench/gateway_cpu.py), in alternating order. Every process reads the same monotonic clock,
so each request splits into:

- **in**: from the client's send to the backend's handler (the client's request, the
  hop(s), the backend's own HTTP server);
- **out**: from the backend's handler returning to the client holding the whole answer.

The gateway's added time on each side is its p50 less direct's. `--pin CORE` runs every
process on one core, as on a 2-core host where the gateway, vLLM's API server and the
clients share the core the worker leaves free. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from gateway_cpu import bodies
from harness import ROOT, fill_registry, gateway, instant_backend, machine


async def run(urls: dict[str, str], payloads: list[dict[str, Any]], gap_s: float) -> dict[str, Any]:
    """Each payload to every url in turn (order alternating); per url the client's (send,
    received) times by trace id."""
    sent: dict[str, dict[str, tuple[float, float]]] = {n: {} for n in urls}
    headers = {"content-type": "application/json"}
    async with contextlib.AsyncExitStack() as stack:
        sessions = {
            n: await stack.enter_async_context(aiohttp.ClientSession(u)) for n, u in urls.items()
        }
        for i, payload in enumerate(payloads):
            for name in list(urls) if i % 2 == 0 else list(reversed(urls)):
                tid = f"trace-{name}-{i}"
                data = json.dumps({**payload, "user": tid}).encode()
                t0 = time.perf_counter()
                post = sessions[name].post("/v1/chat/completions", data=data, headers=headers)
                async with post as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{name}: {r.status} {(await r.text())[:200]}")
                sent[name][tid] = (t0, time.perf_counter())
                await asyncio.sleep(gap_s)
    return sent


def p50_us(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="per path")
    ap.add_argument("--delay-ms", type=float, default=35.0)
    ap.add_argument("--gap-ms", type=float, default=5.0)
    ap.add_argument("--tree", action="append", default=[], help="NAME=DIR of a source tree")
    ap.add_argument("--pin", type=int, help="run every process on this core")
    args = ap.parse_args()
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})  # inherited by every process started below
    trees = dict(t.split("=", 1) for t in args.tree) or {"gateway": str(ROOT)}
    work = Path(tempfile.mkdtemp(prefix="bench-trace-"))
    fill_registry(work / "registry")
    payloads = [json.loads(b) for b in bodies(args.requests)]
    with contextlib.ExitStack() as stack:
        v = stack.enter_context(instant_backend(work / "instant.log", args.delay_ms / 1000))
        urls = {"direct": v.url}
        for name, tree in trees.items():
            env = {"GATEWAY_CPU_PLACEMENT": "none", "PYTHONPATH": tree}
            g = stack.enter_context(gateway(work / "registry", v.url, work / name, env))
            urls[name] = g.url
        asyncio.run(run(urls, payloads[:50], args.gap_ms / 1000))  # warm
        sent = asyncio.run(run(urls, payloads, args.gap_ms / 1000))
        seen = httpx.get(f"{v.url}/trace", timeout=10).json()
    paths: dict[str, Any] = {}
    for name, by_id in sent.items():
        ins = [seen[t][0] - t0 for t, (t0, _) in by_id.items()]
        outs = [t1 - seen[t][1] for t, (_, t1) in by_id.items()]
        total = [t1 - t0 for t0, t1 in by_id.values()]
        paths[name] = {"in_p50_us": p50_us(ins), "out_p50_us": p50_us(outs),
                       "total_p50_ms": round(statistics.median(total) * 1000, 3)}  # fmt: skip
    direct = paths["direct"]
    for name in trees:
        p = paths[name]
        p["added_in_us"] = p["in_p50_us"] - direct["in_p50_us"]
        p["added_out_us"] = p["out_p50_us"] - direct["out_p50_us"]
        p["added_total_ms"] = round(p["total_p50_ms"] - direct["total_p50_ms"], 3)
    out = {
        "bench": "gateway_trace",
        "machine": machine(),
        "requests": args.requests,
        "delay_ms": args.delay_ms,
        "gap_ms": args.gap_ms,
        "pinned_core": args.pin,
        "load_avg": round(os.getloadavg()[0], 2),
        "paths": paths,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
