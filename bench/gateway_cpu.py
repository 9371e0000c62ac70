"""The gateway's own CPU per request: `gateway serve --backend` in front of
bench/instant_backend.py (a stand-in for vLLM that answers at once), driven by a closed
loop, the gateway process's CPU time read from the kernel before and after. Prints one
JSON line.

    .venv/bin/python bench/gateway_cpu.py [--requests 2000] [--concurrency 1]
        [--tree NAME=DIR ...] [--profile FILE] [--delay-ms MS] [--idle-s 5]

For finding and cutting the gateway's per-request work (issue 22), not for the issue's
figures (those are bench/gateway_overhead.py's, next to a real vLLM): with no engine to
run, the gateway's cost is measured free of contention with one. `--tree NAME=DIR` (one
or more) runs one gateway from each source tree (a checkout of another commit, on
PYTHONPATH) beside the others, batches alternating between them, so that levers are
compared in the same run; without it, one gateway from this checkout. `--profile FILE`
records the (first) gateway with py-spy (`pip install py-spy`) as collapsed stacks, and
prints the top frames. After the batches, each gateway's CPU while it serves nothing is
read over `--idle-s` seconds (its watch of the registry, probes, timers): a cost per
second, not per request, that a CPU per request measured at a low rate carries.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from harness import (
    BASE_NAME,
    EXAMPLES,
    ROOT,
    fill_registry,
    gateway,
    instant_backend,
    machine,
)


def bodies(n: int) -> list[bytes]:
    lines = (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    ps = [json.loads(x)["messages"] for x in lines]
    return [
        json.dumps({"model": BASE_NAME, "messages": ps[i % len(ps)], "max_tokens": 8,
                    "temperature": 0}).encode()
        for i in range(n)
    ]  # fmt: skip


async def drive(url: str, payloads: list[bytes], concurrency: int) -> list[float]:
    """Send every payload (`concurrency` at a time); the latencies in seconds."""
    queue = list(reversed(payloads))
    latencies: list[float] = []
    headers = {"content-type": "application/json"}
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=conn) as session:

        async def worker() -> None:
            while queue:
                payload = queue.pop()
                t0 = time.perf_counter()
                async with session.post("/v1/chat/completions", data=payload, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{r.status}: {(await r.text())[:300]}")
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def cpu_s(p: psutil.Process) -> float:
    """CPU time of every thread of `p`, from the scheduler in ns (`cpu_times` counts in
    10 ms ticks: too coarse for short batches)."""
    total = 0
    for task in Path(f"/proc/{p.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def switches(p: psutil.Process) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of every thread of `p` so far: a thread
    that blocks (on epoll, say) switches voluntarily; one the scheduler takes the core
    from while it still has work, involuntarily."""
    counts = [0, 0]
    for task in Path(f"/proc/{p.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                    counts[key.startswith("non")] += int(value)
    return counts[0], counts[1]


def top_frames(collapsed: Path, n: int = 40) -> list[tuple[str, float, float]]:
    """(function, % of samples with it anywhere on the stack, % with it on top), line
    numbers dropped so that a function's lines count together."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        k = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += k
        for f in set(frames):
            inclusive[f] += k
        own[frames[-1]] += k
    return [
        (f, round(100 * c / total, 1), round(100 * own[f] / total, 1))
        for f, c in inclusive.most_common(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="per batch")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="measured batches per gateway")
    ap.add_argument("--tree", action="append", default=[], help="NAME=DIR of a source tree")
    ap.add_argument("--env", action="append", default=[], help="NAME:VAR=VALUE for a tree")
    ap.add_argument("--profile", type=Path, help="py-spy collapsed stacks to this file")
    ap.add_argument(
        "--direct", action="store_true",
        help="also send each batch straight to the backend, in the same rotation: each "
        "gateway's added p50 is then its p50 less the direct one of the same round",
    )  # fmt: skip
    ap.add_argument(
        "--delay-ms", type=float, default=0.0,
        help="the backend answers after this long (as vLLM generating): the gateway then "
        "idles between requests, as it does next to vLLM",
    )  # fmt: skip
    ap.add_argument(
        "--idle-s", type=float, default=5.0,
        help="then each gateway's CPU while idle, over this long (0: not measured)",
    )  # fmt: skip
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(ROOT)}
    extra: dict[str, dict[str, str]] = {n: {} for n in trees}
    for e in args.env:
        name, _, assignment = e.partition(":")
        var, _, value = assignment.partition("=")
        extra[name][var] = value
    work = Path(tempfile.mkdtemp(prefix="bench-gwcpu-"))
    fill_registry(work / "registry")
    payloads = bodies(args.requests)
    with contextlib.ExitStack() as stack:
        v = stack.enter_context(instant_backend(work / "instant.log", args.delay_ms / 1000))
        gws = {}
        for name, tree in trees.items():
            env = {"GATEWAY_CPU_PLACEMENT": "none", "PYTHONPATH": tree, **extra[name]}
            g = stack.enter_context(gateway(work / "registry", v.url, work / name, env))
            gws[name] = (g.url, psutil.Process(g.popen.pid))
            asyncio.run(drive(g.url, payloads[:200], args.concurrency))  # warm
        spy = None
        if args.profile is not None:
            exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            first = next(iter(gws.values()))[1]
            spy = subprocess.Popen(
                [exe, "record", "--pid", str(first.pid), "--format", "raw", "--rate", "500",
                 "--output", str(args.profile), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)
        per_req_us: dict[str, list[float]] = {n: [] for n in gws}
        p50_ms: dict[str, list[float]] = {n: [] for n in gws}
        direct_ms: list[float] = []
        for i in range(args.repeat):
            names = list(gws) if i % 2 == 0 else list(reversed(gws))
            for name in names:
                url, proc = gws[name]
                before = cpu_s(proc)
                lat = asyncio.run(drive(url, payloads, args.concurrency))
                per_req_us[name].append((cpu_s(proc) - before) / len(payloads) * 1e6)
                p50_ms[name].append(statistics.median(lat) * 1000)
            if args.direct:
                lat = asyncio.run(drive(v.url, payloads, args.concurrency))
                direct_ms.append(statistics.median(lat) * 1000)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        idle_ms_per_s: dict[str, float] = {}
        if args.idle_s > 0:
            time.sleep(1.0)  # what the last batch left to do
            before_idle = {n: cpu_s(proc) for n, (_, proc) in gws.items()}
            time.sleep(args.idle_s)
            for n, (_, proc) in gws.items():
                idle_ms_per_s[n] = round((cpu_s(proc) - before_idle[n]) / args.idle_s * 1000, 2)
    out: dict[str, Any] = {
        "bench": "gateway_cpu",
        "machine": machine(),
        "requests_per_batch": args.requests,
        "concurrency": args.concurrency,
        "backend_delay_ms": args.delay_ms,
        "load_avg": round(os.getloadavg()[0], 2),
        "gateways": {
            n: {
                "cpu_us_per_request_median": round(statistics.median(per_req_us[n])),
                "cpu_us_per_request": [round(x) for x in per_req_us[n]],
                "p50_ms_median": round(statistics.median(p50_ms[n]), 3),
                "p50_ms": [round(x, 3) for x in p50_ms[n]],
                **({"idle_cpu_ms_per_s": idle_ms_per_s[n]} if n in idle_ms_per_s else {}),
            }
            for n in gws
        },
    }
    if direct_ms:
        out["direct_p50_ms"] = [round(x, 3) for x in direct_ms]
        for n in gws:
            added = [g - d for g, d in zip(p50_ms[n], direct_ms, strict=True)]
            out["gateways"][n]["added_p50_ms_median"] = round(statistics.median(added), 3)
            out["gateways"][n]["added_p50_ms"] = [round(x, 3) for x in added]
    if args.profile is not None and args.profile.exists():
        out["top_frames"] = top_frames(args.profile)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
