"""The gateway on a registry service (`--registry http://...`) next to the gateway on the
registry directory, in one run. Prints one JSON line.

    .venv/bin/python bench/registry_gateway.py [--quick] [--vllm]

Two gateway processes serve the same registry, one opening its directory and one through
`registry serve` over loopback, both in front of one backend: bench/instant_backend.py by
default (it answers at once, so the gateway's own cost, registry lookups included, is all
there is to measure), or a real vLLM with `--vllm`.

- **throughput**: 24 rounds (4 with `--quick`) at concurrency 16 of chat requests
  spread over the demo adapters and the base; each round a burst to each gateway, in
  alternating order. Reported: the median of the per-round ratios (http / directory),
  every ratio, absolute requests/s, and rounds that stalled (a burst below half its
  gateway's median rate). Target >= 0.97x: no registry round trip per request.
- **alias move**: three gateways on the service and one on the directory; `production` of
  `support-v1` is moved between versions 1 and 2 through the service (an `http://`
  client, as `registry alias` does), 60 times (20 with `--quick`). Each gateway is asked
  for `support-v1` in a loop until its `x-loraport-adapter` header names the new version;
  reported per move: the time until every http gateway serves it (p50/p99/max), and the
  same for the directory gateway. Target p99 under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from harness import ADAPTERS, BASE_NAME, ROOT, fill_registry, gateway, instant_backend, machine
from harness import settings as gateway_settings
from harness import vllm as vllm_server

import registry

BURST = 400
MOVED = "support-v1"
MSGS = [{"role": "user", "content": "Where is my order?"}]


def body(model: str, tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": MSGS, "max_tokens": tokens, "temperature": 0}


def servable(url: str, tokens: int) -> list[str]:
    """The demo models a plain chat request is served by on this backend (the instant
    backend's canned text fails the JSON contract of an adapter with a schema)."""
    with httpx.Client(base_url=url, timeout=300) as client:
        return [
            m for m in [*ADAPTERS, BASE_NAME]
            if client.post("/v1/chat/completions", json=body(m, tokens)).status_code == 200
        ]  # fmt: skip


async def burst(url: str, models: list[str], n: int, tokens: int) -> tuple[float, int]:
    """(requests/s, errors) of `n` requests spread over `models` at concurrency 16."""
    queue = [body(models[i % len(models)], tokens) for i in range(n)]
    errors = 0
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                r = await client.post("/v1/chat/completions", json=queue.pop())
                errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(16)))
        return n / (time.perf_counter() - start), errors


def throughput(direct: str, remote: str, rounds: int, n: int, tokens: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"directory": [], "http": []}
    errors = 0
    order = [("directory", direct), ("http", remote)]
    models = servable(direct, tokens)
    asyncio.run(burst(direct, models, 64, tokens))  # warm both: adapters loaded, routes cached
    asyncio.run(burst(remote, models, 64, tokens))
    for i in range(rounds):
        for name, url in order if i % 2 == 0 else list(reversed(order)):
            rps, errs = asyncio.run(burst(url, models, n, tokens))
            rates[name].append(rps)
            errors += errs
    ratios = [h / d for h, d in zip(rates["http"], rates["directory"], strict=True)]
    stalled = sum(
        rate < statistics.median(xs) / 2 for xs in rates.values() for rate in xs
    )  # fmt: skip
    return {
        "rounds": rounds,
        "models": models,
        "requests_per_burst": n,
        "http_vs_directory_median": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "directory_rps_median": round(statistics.median(rates["directory"]), 1),
        "http_rps_median": round(statistics.median(rates["http"]), 1),
        "stalled_bursts": stalled,
        "errors": errors,
    }


def serving_version(client: httpx.Client, url: str) -> str:
    r = client.post(f"{url}/v1/chat/completions", json=body(MOVED, 1))
    return str(r.headers.get("x-loraport-adapter", f"status {r.status_code}"))


def alias_moves(service: str, remote: list[str], direct: str, moves: int) -> dict[str, Any]:
    """Seconds from each alias move (its write returned) to every gateway serving it."""
    http_s: list[float] = []
    dir_s: list[float] = []
    with registry.open(service) as reg, httpx.Client(timeout=30) as client:
        for i in range(moves):
            version = 2 if i % 2 == 0 else 1
            want = f"{MOVED}@{version}"
            waiting = {*remote, direct}
            reg.set_alias(MOVED, "production", version)
            moved = time.perf_counter()
            seen: dict[str, float] = {}
            while waiting:
                if time.perf_counter() - moved > 30:
                    raise RuntimeError(f"move {i}: {sorted(waiting)} never served {want}")
                for url in list(waiting):
                    if serving_version(client, url) == want:
                        seen[url] = time.perf_counter() - moved
                        waiting.discard(url)
            http_s.append(max(seen[u] for u in remote))
            dir_s.append(seen[direct])
            time.sleep(0.2)  # a gap between moves, as between real ones

    def summary(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        p99 = xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]
        return {"p50_ms": round(statistics.median(xs) * 1000, 1),
                "p99_ms": round(p99 * 1000, 1), "max_ms": round(xs[-1] * 1000, 1)}  # fmt: skip

    return {"moves": moves, "http_gateways": len(remote),
            "every_http_gateway": summary(http_s), "directory_gateway": summary(dir_s)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and moves")
    ap.add_argument("--vllm", action="store_true", help="a real vLLM behind the gateways")
    ap.add_argument("--rounds", type=int, default=None, help="throughput rounds (default 24)")
    args = ap.parse_args()
    rounds, moves = (4, 20) if args.quick else (24, 60)
    rounds = args.rounds or rounds
    work = Path(tempfile.mkdtemp(prefix="loraport-bench-"))
    directory = work / "registry"
    fill_registry(directory)
    second = work / MOVED
    shutil.copytree(ROOT / "examples" / "adapters" / "support-v2", second)
    with registry.open(directory) as reg:
        reg.push_adapter(second, base=BASE_NAME, allow_unknown_dataset=True)  # support-v1@2
    from tests.support.registry_service import registry_service

    try:
        with ExitStack() as stack:
            if args.vllm:
                backend = stack.enter_context(
                    vllm_server(gateway_settings(), work / "vllm.log")
                ).url
            else:
                backend = stack.enter_context(instant_backend(work / "instant.log")).url
            service = stack.enter_context(registry_service(directory, work / "serve.log")).url
            direct = stack.enter_context(gateway(directory, backend, work / "cache-dir")).url
            remote = [
                stack.enter_context(gateway(service, backend, work / f"cache-http{i}")).url  # type: ignore[arg-type]
                for i in range(3)
            ]
            tokens = 16 if args.vllm else 1
            n = 64 if args.vllm else BURST
            result = {
                "bench": "registry_gateway",
                "backend": "vllm" if args.vllm else "instant",
                "throughput_c16": throughput(direct, remote[0], rounds, n, tokens),
                "alias_move": alias_moves(service, remote, direct, moves),
                "machine": machine(),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
