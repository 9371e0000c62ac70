"""Scale-out: one and two vLLM servers behind one gateway, adapter-affinity routing
against plain least-loaded routing, for 16 adapters of skewed (Zipf) popularity.

    .venv/bin/python bench/scaleout.py [--quick] [--json] [--requests N] [--rounds R]

What it starts: a registry directory holding the demo zoo plus renamed copies (16 adapter
names; the copies have the same weights as the four trained adapters, which changes
nothing for routing: vLLM loads each name as a LoRA of its own, in its own slot), two
real vLLM CPU servers launched with the gateway's own command line
(`server.supervisor.vllm_command`), their OpenMP worker threads bound to different cores
(`VLLM_CPU_OMP_THREADS_BIND=0` and `=1`), and for every run a fresh `gateway serve
--backend ...` with `GATEWAY_ROUTING` set to the policy and a small LRU
(`GATEWAY_MAX_LOADED_ADAPTERS`, 4 by default: 16 adapters do not fit, so where each
request goes decides how often it waits for a load). Before every run each vLLM server
unloads every adapter it holds, so every run starts cold.

Configurations: 1 backend (the first server) and 2 backends, each under `affinity` and
`least-loaded`. With one backend the two policies route identically: the pair shows the
run-to-run noise. Each round runs every configuration once, in a rotated order, on the
same seeded Zipf sequence of adapters. A closed loop of `--concurrency` clients sends
chat requests of `--max-tokens` tokens (ignore_eos); a 429 is retried after its
Retry-After, as the OpenAI client does, and counted. Reported per configuration: requests
per second (median of the rounds), p50 and p99 latency (all rounds' requests), the
cold-load share (the gateway's `loraport_adapter_load_waits_total` over the requests
answered), loads, evictions, errors, stalled rounds (below half the median rate), and
with two backends each one's share of the requests (vLLM's own count) and how many
adapters both held at the end.

On a 2-core CPU machine the two servers share the cores with each other, the gateway and
this load generator: two backends show the routing, not a speed-up. The figure that
matters is the cold-load share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from harness import EXAMPLES, fill_registry, machine, ms, settings

from server.supervisor import free_port, vllm_command, vllm_env
from tests.support import launch
from tests.support.launch import VLLM_START_TIMEOUT_S, Process, serving
from tests.support.zoo import BASE_DIR, BASE_NAME

POLICIES = ("affinity", "least-loaded")
DEFAULT_CONFIGS = tuple(f"{n}:{p}" for n in (1, 2) for p in POLICIES)
WAITS = "loraport_adapter_load_waits_total"
VLLM_DONE = "vllm:request_success_total"


# -- pure parts (table-tested in tests/server/test_scaleout_bench.py) ----------------------


def zipf_weights(n: int, s: float) -> list[float]:
    """Popularity of the ranks 1..n under Zipf's law with exponent `s`, summing to 1."""
    raw = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def zipf_sequence(names: Sequence[str], n: int, s: float, seed: int) -> list[str]:
    """`n` names drawn independently, the i-th name with rank i+1's Zipf weight; the
    same for the same seed."""
    return random.Random(seed).choices(list(names), zipf_weights(len(names), s), k=n)


def cold_share(waits: float, answered: int) -> float:
    """The share of answered requests that waited for an adapter load (NaN: none answered)."""
    return waits / answered if answered else math.nan


def parse_configs(text: str) -> list[tuple[int, str]]:
    """`1:affinity,2:least-loaded` -> [(1, "affinity"), (2, "least-loaded")]."""
    out = []
    for item in text.split(","):
        n, _, policy = item.strip().partition(":")
        if n not in ("1", "2") or policy not in POLICIES:
            raise ValueError(f"{item!r}: expected 1 or 2 backends and one of {POLICIES}")
        out.append((int(n), policy))
    return out


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-quantile by rank (as bench/harness.py's LoadResult.pct)."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else math.nan


def rotated(items: Sequence[Any], k: int) -> list[Any]:
    """`items` starting at index k mod len: round k's order of configurations."""
    k %= len(items)
    return [*items[k:], *items[:k]]


def stalled(rates: Sequence[float]) -> int:
    """Rounds below half the median rate (bench/gateway_overhead.py's rule)."""
    if not rates:
        return 0
    med = statistics.median(rates)
    return sum(r < med / 2 for r in rates)


# -- processes -------------------------------------------------------------------------


def vllm_on_core(core: int, log: Path, **kw: Any) -> Any:
    """A real vLLM server whose OpenMP worker threads are bound to `core`."""
    port = free_port()
    cmd = vllm_command(settings(**kw), BASE_DIR, BASE_NAME, port)
    env = {**vllm_env(), "VLLM_CPU_OMP_THREADS_BIND": str(core)}
    return serving(cmd, port, log, "/health", env, VLLM_START_TIMEOUT_S)


def omp_binding(log: Path) -> str:
    """What vLLM's log says of where its OpenMP threads were bound (the last such line)."""
    lines = [x for x in log.read_text(errors="replace").splitlines() if "core ids" in x]
    return lines[-1].split("]", 1)[-1].strip()[-160:] if lines else "not in the log"


def loras(url: str) -> list[str]:
    data = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    return [str(m["id"]) for m in data if m.get("parent")]


def unload_all(url: str) -> None:
    """Every adapter the vLLM server at `url` holds, unloaded: the next run starts cold."""
    for name in loras(url):
        r = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)
        r.raise_for_status()
    if loras(url):
        raise RuntimeError(f"{url} still holds {loras(url)} after unloading")


@contextmanager
def gateway_for(
    registry_dir: Path, cache: Path, backends: tuple[str, ...], policy: str, lru: int
) -> Iterator[Process]:
    env = {
        "GATEWAY_ROUTING": policy,
        "GATEWAY_MAX_LOADED_ADAPTERS": str(lru),
        "GATEWAY_ACCESS_LOG": "false",
    }
    with launch.gateway(registry_dir, cache, backend=backends, env=env, timeout_s=300) as g:
        deadline = time.monotonic() + 120
        while not all(
            b["ready"] for b in httpx.get(f"{g.url}/ready", timeout=30).json()["backends"]
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("not every backend became ready")
            time.sleep(0.3)
        yield g


def scrape(url: str, name: str) -> float:
    """A metric's samples summed (every label)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rpartition(" ")[2])
    return total


# -- load ------------------------------------------------------------------------------


@dataclass
class Run:
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: int = 0
    retried_429: int = 0
    waits: float = 0.0
    loads: float = 0.0
    evictions: float = 0.0
    served_by: list[float] = field(default_factory=list)
    """Each backend's share of the requests it finished (vLLM's own count, probes included)."""
    held_on_all: int = 0
    """With several backends: adapters every backend held at the end (spread, or
    least-loaded's copies)."""

    @property
    def answered(self) -> int:
        return len(self.latencies_s)

    @property
    def rps(self) -> float:
        return self.answered / self.wall_s if self.wall_s else math.nan


def bodies(models: list[str], max_tokens: int) -> list[dict[str, Any]]:
    prompts = [
        json.loads(x)["messages"]
        for x in (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    ]
    return [
        {
            "model": m,
            "messages": prompts[i % len(prompts)],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "response_format": {"type": "text"},
        }
        for i, m in enumerate(models)
    ]


async def _drive(url: str, work: list[dict[str, Any]], concurrency: int, run: Run) -> None:
    queue = list(reversed(work))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                for _ in range(20):
                    r = await client.post("/v1/chat/completions", json=body)
                    if r.status_code != 429:
                        break
                    run.retried_429 += 1
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                if r.status_code == 200:
                    run.latencies_s.append(time.perf_counter() - t0)
                else:
                    run.errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.wall_s = time.perf_counter() - start


def one_run(
    registry_dir: Path,
    cache: Path,
    backends: tuple[str, ...],
    policy: str,
    models: list[str],
    args: argparse.Namespace,
) -> Run:
    for url in backends:
        unload_all(url)
    run = Run()
    before = [scrape(url, VLLM_DONE) for url in backends]
    with gateway_for(registry_dir, cache, backends, policy, args.lru) as g:
        asyncio.run(_drive(g.url, bodies(models, args.max_tokens), args.concurrency, run))
        run.waits = scrape(g.url, WAITS)
        run.loads = scrape(g.url, "loraport_adapter_loads_total")
        run.evictions = scrape(g.url, "loraport_adapter_evictions_total")
    done = [scrape(url, VLLM_DONE) - b for url, b in zip(backends, before, strict=True)]
    run.served_by = [x / sum(done) if sum(done) else math.nan for x in done]
    held = [{n.split("+")[0] for n in loras(url)} for url in backends]
    run.held_on_all = len(set.intersection(*held)) if len(held) > 1 else 0
    return run


def summary(runs: list[Run]) -> dict[str, Any]:
    rates = [r.rps for r in runs]
    latencies = [x for r in runs for x in r.latencies_s]
    answered = sum(r.answered for r in runs)
    waits = sum(r.waits for r in runs)
    return {
        "rps_median": round(statistics.median(rates), 2),
        "rps_rounds": [round(x, 2) for x in rates],
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "answered": answered,
        "load_waits": int(waits),
        "cold_share": round(cold_share(waits, answered), 3),
        "cold_share_rounds": [round(cold_share(r.waits, r.answered), 3) for r in runs],
        "loads": int(sum(r.loads for r in runs)),
        "evictions": int(sum(r.evictions for r in runs)),
        "errors": sum(r.errors for r in runs),
        "retried_429": sum(r.retried_429 for r in runs),
        "stalled_rounds": stalled(rates),
        "held_on_every_backend_at_end": [r.held_on_all for r in runs],
        "served_by_backend_rounds": [[round(x, 2) for x in r.served_by] for r in runs],
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        "| backends | routing | req/s (median) | p50 ms | p99 ms | cold-load share | loads "
        "| errors | 429 retried | stalled |"
    )
    rows = [head, "|" + "---|" * 10]
    for key, r in results.items():
        n, policy = key.split(":")
        rows.append(
            f"| {n} | {policy} | {r['rps_median']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['cold_share']:.3f} | {r['loads']} | {r['errors']} | {r['retried_429']} | "
            f"{r['stalled_rounds']} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short smoke run (1 round, 48 requests)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    ap.add_argument("--requests", type=int, default=300, help="requests per run (default 300)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of every configuration (default 3)")
    ap.add_argument("--concurrency", type=int, default=4,
                    help="clients in the closed loop (default 4, the LRU size: with more "
                         "requests in flight than slots a backend answers 429)")  # fmt: skip
    ap.add_argument(
        "--adapters", type=int, default=16, help="adapter names in the mix (default 16)"
    )
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent (default 1.1)")
    ap.add_argument("--lru", type=int, default=4, help="GATEWAY_MAX_LOADED_ADAPTERS (default 4)")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                    help="BACKENDS:POLICY,... to run (default: all four)")  # fmt: skip
    args = ap.parse_args()
    if args.quick:
        args.requests, args.rounds = 48, 1

    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    names = fill_registry(work / "registry", copies=max(0, args.adapters - 4))[: args.adapters]
    vllm_kw = {
        "local_dtype": "bfloat16",
        "local_max_loras": args.lru,
        "max_loaded_adapters": args.lru,
        "local_gpu_memory_utilization": 0.1,
    }
    configs = parse_configs(args.configs)
    runs: dict[str, list[Run]] = {f"{n}:{p}": [] for n, p in configs}
    cache = work / "cache"
    started = time.monotonic()
    with ExitStack() as stack:
        servers = [
            stack.enter_context(vllm_on_core(core, work / f"vllm-{core}.log", **vllm_kw))
            for core in range(max(n for n, _ in configs))
        ]
        urls = tuple(s.url for s in servers)
        binding = [omp_binding(s.log) for s in servers]
        # Warm-up, not recorded: every adapter pulled into the gateway cache once, both
        # engines past their first requests.
        one_run(work / "registry", cache, urls, "affinity", names + names, args)
        for rnd in range(args.rounds):
            models = zipf_sequence(names, args.requests, args.zipf, args.seed + rnd)
            for n, policy in rotated(configs, rnd):
                run = one_run(work / "registry", cache, urls[:n], policy, models, args)
                runs[f"{n}:{policy}"].append(run)
                if not args.json:
                    print(f"round {rnd} {n} backend(s) {policy}: {run.rps:.2f} req/s, "
                          f"cold share {cold_share(run.waits, run.answered):.3f}, "
                          f"{run.errors} errors", flush=True)  # fmt: skip
    results = {k: summary(v) for k, v in runs.items()}
    two = [results.get(f"2:{p}", {}).get("cold_share") for p in POLICIES]
    out: dict[str, Any] = {
        "bench": "scaleout",
        "quick": args.quick,
        "machine": machine(),
        "adapters": len(names),
        "zipf_s": args.zipf,
        "top4_popularity": round(sum(zipf_weights(len(names), args.zipf)[:4]), 3),
        "requests_per_run": args.requests,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "lru_per_backend": args.lru,
        "max_tokens": args.max_tokens,
        "spread_in_flight": "default (16)",
        "vllm_omp_binding": binding,
        "results": results,
        "two_backends_affinity_over_least_loaded": (
            round(two[0] / two[1], 3) if two[0] is not None and two[1] else None
        ),
        "wall_s": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(table(results))
        print(json.dumps(out, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
