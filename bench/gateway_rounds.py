"""Several gateways in front of one real vLLM, compared in the same run: short requests
at concurrency 16, each round a burst straight to vLLM and one through each gateway, in
an order that rotates from round to round. Prints one JSON line.

    .venv/bin/python bench/gateway_rounds.py [--rounds 10] [--tree NAME=DIR ...]
        [--tax NAME:burn=US ...] [--tax NAME:sleep=US ...] [--hop raw|rawjson|asgi ...]

- `head`: a gateway from this checkout, always there;
- `--tree NAME=DIR`: a gateway from another source tree (`git archive COMMIT server |
  tar -x -C DIR`), to measure a change against the one before next to a real engine;
- `--tax NAME:burn=US` / `--tax NAME:sleep=US`: this checkout's gateway spending US
  microseconds of CPU (a busy loop), or waiting US microseconds without CPU, on every
  completion request (bench/hop_tax/sitecustomize.py). Which of the two costs vLLM
  throughput says whether the gateway's CPU or its latency is what to cut.
- `--hop raw|rawjson|asgi`: not a gateway but one of bench/hop_floor.py's minimal
  forwarders (uvloop + httptools; the same parsing and re-serialising the JSON both ways;
  uvicorn with the gateway's protocol and client and no logic). The body goes to vLLM as
  the client sent it: what a Python hop that only forwards costs vLLM, next to the
  gateway, in the same run.

Every gateway is `gateway serve --backend` on the cores vLLM's worker leaves free, with
vLLM's engine core beside its worker (the product's default placement,
`gateway+engine`); the load generator runs on the free cores too. Per path: the median
of its per-round ratios to the direct burst of the same round, their spread, the rounds
that stalled (a burst below half its path's median rate), tokens/s, vLLM's engine steps
per burst, and each gateway's (and hop's) CPU per request (every thread's scheduler time,
in ns) and context switches per request, voluntary (it blocked) and involuntary (the
scheduler took the core from it while it had work).
Each other gateway is also compared with `head` round by round (`vs_head_median`: the
median of its tokens/s over `head`'s in the same round; `ahead_of_head_rounds`), which
a slow drift of vLLM's own rate does not move.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from gateway_cpu import cpu_s, switches
from gateway_overhead import bodies, engine_steps, free_cores, vllm_group_of
from harness import ROOT, fill_registry, gateway, load, machine, settings, vllm
from hop_floor import hop

from server import placement
from tests.support.zoo import BASE_NAME

TAX_DIR = ROOT / "bench" / "hop_tax"
BURST = 96
TOKENS = 8
HOPS = {"raw": "raw", "rawjson": "raw+json", "asgi": "asgi"}
"""`--hop` names, and hop_floor.py's kinds they start."""


def gateway_envs(trees: list[str], taxes: list[str]) -> dict[str, dict[str, str]]:
    """Each gateway's name and the environment it starts with (pure). Raises ValueError
    on a malformed option or a name used twice (`head` and `direct` are taken)."""
    envs: dict[str, dict[str, str]] = {"head": {}}

    def add(name: str, env: dict[str, str], given: str) -> None:
        if not name.isidentifier() or name in envs or name == "direct":
            raise ValueError(f"{given!r}: the name must be a new word (not head or direct)")
        envs[name] = env

    for tree in trees:
        name, _, path = tree.partition("=")
        if not path or not Path(path, "server").is_dir():
            raise ValueError(f"--tree {tree!r}: expected NAME=DIR, DIR holding server/")
        add(name, {"PYTHONPATH": path}, tree)
    for tax in taxes:
        name, _, spec = tax.partition(":")
        kind, _, us = spec.partition("=")
        if kind not in ("burn", "sleep") or not us.isdigit():
            raise ValueError(f"--tax {tax!r}: expected NAME:burn=US or NAME:sleep=US")
        var = "HOP_TAX_BURN_US" if kind == "burn" else "HOP_TAX_SLEEP_US"
        add(name, {"PYTHONPATH": str(TAX_DIR), var: us}, tax)
    return envs


def hop_kinds(names: list[str], taken: dict[str, Any]) -> dict[str, str]:
    """Each `--hop` name and hop_floor.py's kind it starts (pure). Raises ValueError on
    an unknown name, or one given twice or taken by a gateway."""
    out: dict[str, str] = {}
    for name in names:
        if name not in HOPS:
            raise ValueError(f"--hop {name!r}: expected one of {', '.join(HOPS)}")
        if name in out or name in taken:
            raise ValueError(f"--hop {name!r}: given twice, or the name of a gateway")
        out[name] = HOPS[name]
    return out


def describe(env: dict[str, str]) -> dict[str, str]:
    """What a gateway is, from its environment (pure)."""
    if "HOP_TAX_BURN_US" in env:
        return {"burn_us": env["HOP_TAX_BURN_US"]}
    if "HOP_TAX_SLEEP_US" in env:
        return {"sleep_us": env["HOP_TAX_SLEEP_US"]}
    return {"tree": env.get("PYTHONPATH", "this checkout")}


def order(paths: list[str], round_no: int) -> list[str]:
    """The paths in the order of this round: rotated by one each round (pure)."""
    k = round_no % len(paths)
    return paths[k:] + paths[:k]


Switched = dict[str, list[tuple[float, float]]]
"""Per path, per burst: (voluntary, involuntary) context switches per request."""


def summary(
    tps: dict[str, list[float]],
    cpu: dict[str, list[float]],
    steps: dict[str, list[float]],
    switched: Switched | None = None,
) -> dict[str, Any]:
    """Per path: median ratio to direct over the rounds, spread, stalls, rates, and for a
    gateway or hop its CPU and context switches per request (pure)."""
    out: dict[str, Any] = {}
    for path, rates in tps.items():
        med = statistics.median(rates)
        row: dict[str, Any] = {
            "tokens_per_s_median": round(med, 1),
            "tokens_per_s": [round(x) for x in rates],
            "stalled_rounds": sum(x < med / 2 for x in rates),
            "engine_steps_median": statistics.median(steps[path]),
        }
        if path != "direct":
            ratios = [g / d for g, d in zip(rates, tps["direct"], strict=True)]
            row["ratio_median"] = round(statistics.median(ratios), 3)
            row["ratios"] = [round(x, 3) for x in ratios]
            row["cpu_ms_per_request_median"] = round(statistics.median(cpu[path]), 2)
            if switched is not None:
                row["switches_per_request_median"] = {
                    kind: round(statistics.median(x[i] for x in switched[path]), 2)
                    for i, kind in enumerate(("voluntary", "involuntary"))
                }
        if path not in ("direct", "head"):
            vs = [g / h for g, h in zip(rates, tps["head"], strict=True)]
            row["vs_head_median"] = round(statistics.median(vs), 3)
            row["ahead_of_head_rounds"] = sum(x > 1 for x in vs)
        out[path] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="at least 1 (24 for the figures)")
    ap.add_argument("--tree", action="append", default=[], help="NAME=DIR of a source tree")
    ap.add_argument("--tax", action="append", default=[], help="NAME:burn=US or NAME:sleep=US")
    ap.add_argument("--hop", action="append", default=[],
                    help=f"one of {', '.join(HOPS)}: a minimal forwarder from "
                    "bench/hop_floor.py beside the gateways")  # fmt: skip
    args = ap.parse_args()
    try:
        envs = gateway_envs(args.tree, args.tax)
    except ValueError as e:
        ap.error(str(e))
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    try:
        hops = hop_kinds(args.hop, envs)
    except ValueError as e:
        ap.error(str(e))
    work = Path(tempfile.mkdtemp(prefix="bench-rounds-"))
    fill_registry(work / "registry")
    s = settings(local_dtype="bfloat16", max_loaded_adapters=4)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        v = stack.enter_context(vllm(s, work / "vllm.log"))
        group = vllm_group_of(v.url)
        free = free_cores(group)
        placement.apply(group, "gateway+engine", this=False)
        placement.pin_process(os.getpid(), free)
        urls = {"direct": v.url}
        procs: dict[str, psutil.Process] = {}
        for name, env in envs.items():
            env = {**env, "GATEWAY_CPU_AFFINITY": ",".join(map(str, sorted(free)))}
            g = stack.enter_context(gateway(work / "registry", v.url, work / name, env))
            urls[name], procs[name] = g.url, psutil.Process(g.popen.pid)
            assert load(g.url, bodies(BASE_NAME, 8, TOKENS), 1).errors == 0, f"{name} failed"
        probe = json.dumps(bodies(BASE_NAME, 1, TOKENS)[0]).encode()
        for name, kind in hops.items():
            url, proc = stack.enter_context(hop(kind, v.url, work / f"{name}.log", probe))
            placement.pin_process(proc.pid, free)
            urls[name], procs[name] = url, proc
            assert load(url, bodies(BASE_NAME, 8, TOKENS), 1).errors == 0, f"{name} failed"
        paths = list(urls)
        tps: dict[str, list[float]] = {p: [] for p in paths}
        cpu: dict[str, list[float]] = {p: [] for p in paths}
        switched: Switched = {p: [] for p in paths}
        steps: dict[str, list[float]] = {p: [] for p in paths}
        errors = 0
        for i in range(args.rounds):
            for path in order(paths, i):
                before = engine_steps(v.url)
                used = cpu_s(procs[path]) if path in procs else 0.0
                was = switches(procs[path]) if path in procs else (0, 0)
                r = load(urls[path], bodies(BASE_NAME, BURST, TOKENS), 16)
                if path in procs:
                    cpu[path].append((cpu_s(procs[path]) - used) * 1000 / BURST)
                    now = switches(procs[path])
                    switched[path].append(((now[0] - was[0]) / BURST, (now[1] - was[1]) / BURST))
                steps[path].append(engine_steps(v.url)[0] - before[0])
                tps[path].append(r.tokens_per_s)
                errors += r.errors
    print(
        json.dumps(
            {
                "bench": "gateway_rounds",
                "machine": machine(),
                "free_cores": sorted(free),
                "rounds": args.rounds,
                "requests_per_burst": BURST,
                "tokens": TOKENS,
                "gateways": {n: describe(e) for n, e in envs.items()},
                "hops": hops,
                "errors": errors,
                "paths": summary(tps, cpu, steps, switched),
                "wall_s": round(time.perf_counter() - started),
                "load_avg_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
